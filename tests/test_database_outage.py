"""PostgreSQL stops answering: the server stays responsive, calls fail fast and retryably, and it recovers alone.

The server reaches PostgreSQL through a loopback proxy that the test tells to
black-hole traffic (accept, forward nothing, answer nothing): a frozen or
partitioned database, which only client-side bounds can detect.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import make_url

from convhub.v1 import account_pb2, common_pb2, ingest_service_pb2
from convhub.v1 import account_service_pb2 as acs
from convhub.v1 import conversation_service_pb2 as cs
from tests.blackhole_proxy import BlackholeProxy
from tests.conftest import Hub, create_database, dedicated_hub, new_tenant
from tests.support import SMS, TEL, Api, HealthWatch, rich_error, timed

READ_TIMEOUT = 2.0  # CONVHUB_DB_READ_TIMEOUT: the longest the loop may stall, once per outage (+0.5 s slack)
STATEMENT_TIMEOUT = 2.0  # CONVHUB_DB_STATEMENT_TIMEOUT: bounds a write waiting for an answer (+0.5 s slack)
CALL_DEADLINE = 15.0  # far beyond both: a call still waiting at this point is waiting for the database
FAST = 1.0  # once the outage is known, a call answers without waiting (normally in milliseconds)
SMS_DURING_OUTAGE = ingest_service_pb2.IngestMessageRequest(
    channel=SMS,
    self=common_pb2.Address(type=TEL, target="+15559990000"),
    peer=common_pb2.Address(type=TEL, target="+15550001111"),
    text="sent during an outage",
)


@pytest.fixture
def hub_behind_proxy(tmp_path: Path) -> Iterator[tuple[Hub, BlackholeProxy]]:
    for url in create_database("postgresql", tmp_path):
        real = make_url(url)
        proxy = BlackholeProxy(real.host or "127.0.0.1", real.port or 5432)
        proxied = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        env = {
            "CONVHUB_DB_READ_TIMEOUT": str(READ_TIMEOUT),
            "CONVHUB_DB_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
            "CONVHUB_DB_CONNECT_TIMEOUT": "2",
            "CONVHUB_LOG_LEVEL": "INFO",
        }
        try:
            with dedicated_hub(proxied, tmp_path, env, direct_url=url) as hub:
                yield hub, proxy
        finally:
            proxy.close()


def assert_database_unavailable(outcome: Any) -> None:
    assert isinstance(outcome, grpc.RpcError), f"expected UNAVAILABLE, the call succeeded: {outcome}"
    rich = rich_error(outcome)
    assert (rich.code, rich.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_UNAVAILABLE"), rich


def assert_outage_noticed_then_answered_fast(
    first: Callable[[], Any], its_timeout: float, then: list[Callable[[], Any]]
) -> None:
    """`first` meets the outage and fails within its timeout (+0.5 s slack); the calls after it fail at once."""
    took, outcome = timed(first)
    assert_database_unavailable(outcome)
    assert took < its_timeout + 0.5 + 3, took
    for call in then:
        took, outcome = timed(call)
        assert_database_unavailable(outcome)
        assert took < FAST, (getattr(call, "__name__", call), took)


def wait_until_it_answers(call: Callable[[], Any], bound: float = 30.0) -> Any:
    stop = time.monotonic() + bound
    while True:
        try:
            return call()
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > stop:  # type: ignore[attr-defined]
                raise
        time.sleep(0.25)


def test_black_holed_database_answers_unavailable_fast_keeps_health_and_recovers(
    hub_behind_proxy: tuple[Hub, BlackholeProxy],
) -> None:
    hub, proxy = hub_behind_proxy
    tenant, newcomer = new_tenant(hub), new_tenant(hub)  # the newcomer's token is not cached by the server
    account = account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, name="main")
    with hub.channel() as channel:
        api = Api.for_tenant(channel, tenant.metadata)
        newcomer_api = Api.for_tenant(channel, newcomer.metadata)
        conversation_id = api.sms(text="before the outage").conversation.id
        get = cs.GetConversationRequest(id=conversation_id)

        def get_conversation() -> Any:
            return api.conversations.GetConversation(get, timeout=CALL_DEADLINE)

        def create_account() -> Any:
            return api.accounts.CreateAccount(acs.CreateAccountRequest(account=account), timeout=CALL_DEADLINE)

        def list_as_newcomer() -> Any:
            return newcomer_api.conversations.ListConversations(cs.ListConversationsRequest(), timeout=CALL_DEADLINE)

        def ingest() -> Any:
            return api.ingest.IngestMessage(SMS_DURING_OUTAGE, timeout=CALL_DEADLINE)  # through the group commit

        # Outage 1: a write meets it first (on a worker thread: the loop never waits).
        with HealthWatch(hub) as watch:
            proxy.blackhole()
            assert_outage_noticed_then_answered_fast(
                create_account, STATEMENT_TIMEOUT, [get_conversation, create_account, ingest, list_as_newcomer]
            )
            assert hub.http_base is not None
            with httpx.Client(base_url=hub.http_base, timeout=CALL_DEADLINE) as http:
                rest = http.get(f"/v1.0/conversations/{conversation_id}", params={"token": tenant.token})
            assert rest.status_code == 503, rest.text
            proxy.forward()
            assert wait_until_it_answers(get_conversation).id == conversation_id
        assert not watch.failures and watch.answered > 0
        assert watch.slowest < FAST, watch.slowest  # health never waited for the database

        # Outage 2: a read meets it first, inline on the event loop: one bounded stall, then fast answers.
        with HealthWatch(hub) as watch:
            proxy.blackhole()
            assert_outage_noticed_then_answered_fast(
                get_conversation, READ_TIMEOUT, [get_conversation, get_conversation, create_account, ingest]
            )
            proxy.forward()
            wait_until_it_answers(get_conversation)
        assert not watch.failures and watch.answered > 0
        assert watch.slowest < READ_TIMEOUT + 0.5 + 3, watch.slowest

        # Everything works again, without a restart, for cached and new tokens alike.
        created = create_account()
        assert api.accounts.GetAccount(acs.GetAccountRequest(id=created.id)).id == created.id
        assert ingest().conversation.id == conversation_id
        assert list(list_as_newcomer().result) == []

    hub.process.terminate()
    hub.process.wait(timeout=20)
    # serve's lines, not its webhook worker process's: that one has a breaker of its own, and logs it too
    log = "\n".join(line for line in hub.output if "[webhook-worker]" not in line)
    assert log.count("database not answering") == 2 and log.count("database answering again") == 2, log
