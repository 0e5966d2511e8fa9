"""Another process holds the lock writes need: the server stays responsive, writes answer UNAVAILABLE (issue 10.4).

The test process itself is that other process. On SQLite it holds the file's
write lock (`BEGIN IMMEDIATE`), as the CLI, a backup or a second server can;
on PostgreSQL a row lock every write of the tenant needs (its event counter),
as a long transaction of another replica can.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from google.protobuf import field_mask_pb2
from sqlalchemy import make_url

from convhub.server.store.pg_doorbell import libpq_conninfo
from convhub.v1 import account_pb2, conversation_pb2, webhook_pb2, webhook_service_pb2, webhook_service_pb2_grpc
from convhub.v1 import account_service_pb2 as acs
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import BACKENDS, Hub, Tenant, create_database, dedicated_hub, new_tenant
from tests.support import Api, HealthWatch, rich_error, timed

LOCK_TIMEOUT = 1.5  # CONVHUB_DB_LOCK_TIMEOUT for this server
FAST = 1.0  # far above a read's or a health check's normal milliseconds, far below the lock timeout


@pytest.fixture(params=BACKENDS)
def locking_hub(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Hub]:
    for url in create_database(request.param, tmp_path):
        env = {"CONVHUB_DB_LOCK_TIMEOUT": str(LOCK_TIMEOUT), "CONVHUB_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.0/8"}
        with dedicated_hub(url, tmp_path, env) as hub:
            yield hub


class WriteLockHolder:
    """This process holding a lock the tenant's writes need, like a second writer would."""

    def __init__(self, hub: Hub, tenant: Tenant) -> None:
        self._customer_id = tenant.customer_id
        self._sqlite: sqlite3.Connection | None = None
        self._pg: psycopg.Connection[Any] | None = None
        if hub.backend == "sqlite":
            path = make_url(hub.database_url).database
            assert path is not None
            self._sqlite = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        else:
            self._pg = psycopg.connect(libpq_conninfo(hub.database_url))

    def __enter__(self) -> WriteLockHolder:
        if self._sqlite is not None:
            self._sqlite.execute("BEGIN IMMEDIATE")
        else:
            assert self._pg is not None
            self._pg.execute("SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (self._customer_id,))
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        for conn in (self._sqlite, self._pg):
            if conn is not None:
                conn.close()

    def release(self) -> None:
        if self._sqlite is not None and self._sqlite.in_transaction:
            self._sqlite.execute("ROLLBACK")
        if self._pg is not None:
            self._pg.rollback()


def test_writes_wait_for_another_process_lock_off_the_loop(locking_hub: Hub) -> None:
    hub = locking_hub
    tenant = new_tenant(hub)
    with hub.channel() as channel:
        api = Api.for_tenant(channel, tenant.metadata)
        webhooks = webhook_service_pb2_grpc.WebhookServiceStub(channel)
        conversation = api.sms(text="before the lock").conversation
        account = account_pb2.Account(type=account_pb2.ACCOUNT_TYPE_SMS, name="main")
        rename = cs.UpdateConversationRequest(
            conversation=conversation_pb2.Conversation(id=conversation.id, name="renamed"),
            update_mask=field_mask_pb2.FieldMask(paths=["name"]),
        )
        writes: dict[str, Callable[[], Any]] = {
            # SQLite: inline when the lock is free, on a thread when it is not; PostgreSQL: on a thread
            "UpdateConversation": lambda: api.conversations.UpdateConversation(rename),
            "CreateAccount": lambda: api.accounts.CreateAccount(acs.CreateAccountRequest(account=account)),
            # through the group commit's thread
            "IngestMessage": lambda: api.sms(text="while locked"),
            # an async handler running its own transaction (services/webhooks.py)
            "CreateWebhookEndpoint": lambda: webhooks.CreateWebhookEndpoint(
                webhook_service_pb2.CreateWebhookEndpointRequest(
                    webhook_endpoint=webhook_pb2.WebhookEndpoint(url="http://127.0.0.1:9/hook")
                ),
                metadata=tenant.metadata,
                timeout=30,
            ),
        }

        def read() -> Any:
            return api.conversations.GetConversation(cs.GetConversationRequest(id=conversation.id))

        with HealthWatch(hub) as watch, WriteLockHolder(hub, tenant), ThreadPoolExecutor(len(writes)) as pool:
            waiting = {name: pool.submit(timed, write) for name, write in writes.items()}
            threading.Event().wait(LOCK_TIMEOUT / 3)  # the writes are waiting for the lock now
            took, outcome = timed(read)  # reads never wait for writers (WAL)
            assert not isinstance(outcome, grpc.RpcError), outcome
            assert took < FAST, took
            for name, future in waiting.items():
                took, outcome = future.result()
                assert isinstance(outcome, grpc.RpcError), f"{name} succeeded while the lock was held"
                rich = rich_error(outcome)
                assert (rich.code, rich.reason) == (grpc.StatusCode.UNAVAILABLE, "DATABASE_BUSY"), (name, rich)
                assert LOCK_TIMEOUT * 0.8 < took < LOCK_TIMEOUT + 5, (name, took)  # it waited, then gave up
        assert not watch.failures and watch.answered > 0
        assert watch.slowest < FAST, watch.slowest  # no health check waited for the lock

        # A write that meets the lock but gets it within the timeout just succeeds, a little later.
        with WriteLockHolder(hub, tenant) as lock:
            renaming = threading.Thread(target=lambda: results.append(timed(writes["UpdateConversation"])))
            results: list[tuple[float, Any]] = []
            renaming.start()
            threading.Event().wait(LOCK_TIMEOUT / 3)
            lock.release()
            renaming.join(timeout=30)
        [(took, renamed)] = results
        assert not isinstance(renamed, grpc.RpcError), renamed
        assert renamed.name == "renamed"

        # Released: every write goes through again.
        for name, write in writes.items():
            took, outcome = timed(write)
            assert not isinstance(outcome, grpc.RpcError), (name, outcome)
        assert read().name == "renamed"
