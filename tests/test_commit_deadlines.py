"""A write whose caller was told DEADLINE_EXCEEDED is not stored (issue 12), and none commits after close_commits.

Callers that give up retry, often without an idempotency key: a write that
committed behind a DEADLINE_EXCEEDED becomes a duplicate. The server checks
the caller's deadline just before COMMIT (store/commit_gate.py).
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from sqlalchemy import insert, select, text

from convhub.server.store.db import open_database, upgrade_schema
from convhub.server.store.faults import CommitsClosed
from convhub.server.store.models import Account, Customer, Message
from convhub.v1 import account_pb2, common_pb2, ingest_service_pb2
from convhub.v1 import account_service_pb2 as acs
from tests.conftest import BACKENDS, Hub, Tenant, create_database, secret_box_for_tests
from tests.support import SMS, TEL, Api

CALLS = 50
# Tiny deadlines: some calls finish in time, many do not, and some run out in the middle of their write.
DEADLINES = [0.002, 0.004, 0.006, 0.008, 0.012, 0.016, 0.025, 0.04]
IN_FLIGHT = 8


def run_with_deadlines(calls: list[Callable[[float], Any]]) -> dict[int, str]:
    """Each call with the next tiny deadline, IN_FLIGHT at a time; the status code name each one got."""

    def one(index: int, call: Callable[[float], Any], deadline: float) -> tuple[int, str]:
        try:
            call(deadline)
        except grpc.RpcError as err:
            return index, err.code().name  # type: ignore[attr-defined]
        return index, "OK"

    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        jobs = [
            pool.submit(one, i, call, deadline)
            for (i, call), deadline in zip(enumerate(calls), itertools.cycle(DEADLINES), strict=False)
        ]
        return dict(job.result() for job in jobs)


def test_writes_past_their_deadline_are_not_stored(hub: Hub, channel: grpc.Channel, tenant: Tenant) -> None:
    api = Api.for_tenant(channel, tenant.metadata)
    run = uuid.uuid4().hex[:8]

    def create_account(i: int) -> Callable[[float], Any]:
        account = account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, name=f"{run}-{i}")
        request = acs.CreateAccountRequest(account=account, request_id=f"{run}-{i}")
        return lambda deadline: api.accounts.CreateAccount(request, timeout=deadline)

    def ingest(i: int) -> Callable[[float], Any]:
        request = ingest_service_pb2.IngestMessageRequest(
            channel=SMS,
            self=common_pb2.Address(type=TEL, target="+15559990000"),
            peer=common_pb2.Address(type=TEL, target=f"+1555{i:07d}"),
            text="hi",
            transaction_id=f"{run}-{i}",
        )
        return lambda deadline: api.ingest.IngestMessage(request, timeout=deadline)

    accounts = run_with_deadlines([create_account(i) for i in range(CALLS)])
    ingests = run_with_deadlines([ingest(i) for i in range(CALLS)])

    with hub.engine.connect() as conn:
        stored_accounts = set(
            conn.execute(select(Account.name).where(Account.customer_id == tenant.customer_id)).scalars()
        )
        stored_messages = set(
            conn.execute(select(Message.transaction_id).where(Message.customer_id == tenant.customer_id)).scalars()
        )
    for outcomes, stored in ((accounts, stored_accounts), (ingests, stored_messages)):
        told_late = {f"{run}-{i}" for i, code in outcomes.items() if code == "DEADLINE_EXCEEDED"}
        succeeded = {f"{run}-{i}" for i, code in outcomes.items() if code == "OK"}
        assert set(outcomes.values()) <= {"OK", "DEADLINE_EXCEEDED"}, outcomes
        assert told_late, "no call ran out of time: the deadlines are not tiny enough to test anything"
        assert not told_late & stored, (
            f"{len(told_late & stored)} of {len(told_late)} told DEADLINE_EXCEEDED were stored"
        )
        assert succeeded <= stored


def test_rest_writes_past_their_grpc_timeout_are_not_stored(hub: Hub, tenant: Tenant) -> None:
    assert hub.http_base is not None
    run = uuid.uuid4().hex[:8]
    headers = {"authorization": f"Bearer {tenant.token}"}
    outcomes: dict[str, int] = {}
    with httpx.Client(base_url=hub.http_base, headers=headers, timeout=30) as http:
        for i, deadline in zip(range(CALLS), itertools.cycle(DEADLINES), strict=False):
            response = http.post(
                "/v1.0/conversation_accounts",
                json={"type": "sms", "name": f"{run}-{i}"},
                headers={"grpc-timeout": f"{round(deadline * 1e6)}u"},
            )
            outcomes[f"{run}-{i}"] = response.status_code
    with hub.engine.connect() as conn:
        stored = set(conn.execute(select(Account.name).where(Account.customer_id == tenant.customer_id)).scalars())
    told_late = {name for name, status in outcomes.items() if status == 504}
    assert set(outcomes.values()) <= {200, 504}, outcomes
    assert told_late, "no call ran out of time"
    assert not told_late & stored, f"{len(told_late & stored)} of {len(told_late)} told 504 were stored"
    assert {name for name, status in outcomes.items() if status == 200} <= stored


SLOW_COMMIT = 0.5  # seconds a deferred trigger sleeps inside COMMIT, for rows marked "slow-commit"
SLOW_COMMIT_TRIGGERS = [
    """CREATE FUNCTION test_slow_commit() RETURNS trigger LANGUAGE plpgsql AS $$
       BEGIN
         IF concat(to_jsonb(NEW)->>'name', to_jsonb(NEW)->>'text') LIKE 'slow-commit%' THEN
           PERFORM pg_sleep(0.5);
         END IF;
         RETURN NULL;
       END $$""",
    *(
        f"""CREATE CONSTRAINT TRIGGER test_slow_commit AFTER INSERT ON {table}
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION test_slow_commit()"""
        for table in ("accounts", "messages")
    ),
]


@pytest.fixture
def slow_commits(hub: Hub) -> Iterator[None]:
    if hub.backend != "postgresql":
        pytest.skip("a COMMIT that takes long needs a deferred trigger (PostgreSQL)")
    with hub.engine.begin() as conn:
        for statement in SLOW_COMMIT_TRIGGERS:
            conn.execute(text(statement))
    try:
        yield
    finally:
        with hub.engine.begin() as conn:
            for table in ("accounts", "messages"):
                conn.execute(text(f"DROP TRIGGER test_slow_commit ON {table}"))
            conn.execute(text("DROP FUNCTION test_slow_commit()"))


def test_rest_write_whose_commit_outlasts_its_timeout_answers_with_its_result(
    hub: Hub, tenant: Tenant, slow_commits: None
) -> None:
    """A commit that began in time but ends past the deadline: the caller gets the result, not 504 over a stored row."""
    assert hub.http_base is not None
    headers = {"authorization": f"Bearer {tenant.token}", "grpc-timeout": f"{round(SLOW_COMMIT * 1e3 / 2)}m"}
    with httpx.Client(base_url=hub.http_base, headers=headers, timeout=30) as http:
        account = http.post("/v1.0/conversation_accounts", json={"type": "sms", "name": "slow-commit account"})
        message = http.post(  # through the group commit
            "/v1.0/conversation_messages:ingest",
            json={
                "channel": "message",
                "self": {"type": "tel", "target": "+15559990000"},
                "peer": {"type": "tel", "target": "+15550001111"},
                "text": "slow-commit message",
            },
        )
    assert (account.status_code, message.status_code) == (200, 200), (account.text, message.text)
    with hub.engine.connect() as conn:
        assert conn.execute(select(Account.id).where(Account.customer_id == tenant.customer_id)).all()
        assert conn.execute(select(Message.id).where(Message.customer_id == tenant.customer_id)).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_after_close_commits_no_write_commits(backend: str, tmp_path: Path) -> None:
    for url in create_database(backend, tmp_path):
        db = open_database(url, workers=2, secrets=secret_box_for_tests())
        try:
            upgrade_schema(db.writer)
            with db.writer.begin() as conn:
                conn.execute(insert(Customer).values(id="c-open", name="before", tm_create=0, tm_update=0))
            db.close_commits()
            with pytest.raises(CommitsClosed), db.writer.begin() as conn:
                conn.execute(insert(Customer).values(id="c-closed", name="after", tm_create=0, tm_update=0))
            with db.reader.connect() as conn:
                assert set(conn.execute(select(Customer.id)).scalars()) == {"c-open"}
        finally:
            db.dispose()
