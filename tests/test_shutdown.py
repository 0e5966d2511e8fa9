"""SIGTERM drains in order, in-flight calls finish, and past the grace a call answers or does not commit.

Calls are made slow for real: the test holds the lock their writes need (a
row lock on PostgreSQL, SQLite's write lock), so they are in flight inside a
real `convhub serve` until the test lets go.
"""

from __future__ import annotations

import contextlib
import socket
import sqlite3
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import grpc
import httpx
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import make_url

from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import create_db_engine
from convhub.server.store.pg_doorbell import libpq_conninfo
from convhub.v1 import common_pb2, conversation_pb2, ingest_service_pb2
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import BACKENDS, Tenant, create_database, start_server, stop_server
from tests.support import Api

SELF = "+15559990000"


@dataclass
class Server:
    backend: str
    url: str
    proc: subprocess.Popen[str]
    grpc_target: str
    http_base: str
    tenant: Tenant

    def rest_client(self) -> httpx.Client:
        """A client already connected (so a call made under the lock reaches the server at once)."""
        client = httpx.Client(base_url=self.http_base, headers={"Authorization": f"Bearer {self.tenant.token}"})
        assert client.get("/healthz").status_code == 200
        return client

    @staticmethod
    def rest_ingest(client: httpx.Client, text: str) -> httpx.Response:
        body = {
            "channel": "message",
            "self": {"type": "tel", "target": SELF},
            "peer": {"type": "tel", "target": "+15550001111"},
            "text": text,
        }
        return client.post("/v1.0/conversation_messages:ingest", json=body, timeout=60)

    def stored(self, text: str) -> int:
        """How many messages with this text the database holds."""
        engine = create_db_engine(self.url, pool_size=1)
        try:
            with engine.connect() as conn:
                return int(conn.exec_driver_sql(_count_sql(self.backend), (text,)).scalar_one())
        finally:
            engine.dispose()

    def output_after_exit(self, timeout: float = 60) -> str:
        out, _ = self.proc.communicate(timeout=timeout)
        return out


def _count_sql(backend: str) -> str:
    return f"SELECT count(*) FROM messages WHERE text = {'%s' if backend == 'postgresql' else '?'}"


@contextlib.contextmanager
def serving(backend: str, tmp_path: Path, **settings: str) -> Iterator[Server]:
    env = {f"CONVHUB_{k.upper()}": v for k, v in settings.items()} | {"CONVHUB_LOG_LEVEL": "INFO"}
    for url in create_database(backend, tmp_path):
        proc, grpc_target, http_base, _lines = start_server(url, data_dir=tmp_path, env=env)
        assert http_base is not None
        engine = create_db_engine(url, pool_size=1)
        try:
            customer_id = create_customer(engine, "drain")
            tenant = Tenant(customer_id, create_token(engine, customer_id).token)
        finally:
            engine.dispose()
        try:
            yield Server(backend, url, proc, grpc_target, http_base, tenant)
        finally:
            if proc.poll() is None:
                stop_server(proc)


@contextlib.contextmanager
def writes_blocked(server: Server) -> Iterator[None]:
    """Hold the lock every write of the server's tenant needs, until the block ends."""
    if server.backend == "postgresql":
        with psycopg.connect(libpq_conninfo(server.url)) as conn:
            conn.execute("SELECT 1 FROM customers WHERE id = %s FOR UPDATE", (server.tenant.customer_id,))
            yield
            conn.rollback()
        return
    conn = sqlite3.connect(str(make_url(server.url).database), isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield
        conn.execute("ROLLBACK")
    finally:
        conn.close()


def wait_until_in_flight(server: Server, waiting_writers: int) -> None:
    """Until the server's writes are stuck on our lock (observable on PostgreSQL; SQLite: give them time)."""
    if server.backend != "postgresql":
        time.sleep(2.0)
        return
    with psycopg.connect(libpq_conninfo(server.url), autocommit=True) as conn:
        for _ in range(400):
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] >= waiting_writers:
                time.sleep(0.3)  # calls queued behind the waiting batch arrive alongside it
                return
            time.sleep(0.05)
    pytest.fail(f"fewer than {waiting_writers} writes ever waited on the lock")


def refused(http_base: str) -> bool:
    parts = urlsplit(http_base)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=5):
            return False
    except ConnectionRefusedError:
        return True


def eventually(condition: Callable[[], bool], what: str, within: float = 20) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"never: {what}")
        time.sleep(0.05)


def test_sigterm_drains_in_order_while_slow_rest_and_grpc_calls_finish_with_their_results(tmp_path: Path) -> None:
    with (
        serving("postgresql", tmp_path, shutdown_grace="30") as server,
        grpc.insecure_channel(server.grpc_target) as channel,
        ThreadPoolExecutor(4) as pool,
    ):
        api = Api.for_tenant(channel, server.tenant.metadata)
        conversation = api.sms(text="opens the room").conversation
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=60)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING

        client = server.rest_client()
        with writes_blocked(server):
            rest: Future[httpx.Response] = pool.submit(server.rest_ingest, client, "slow over REST")
            update = cs.UpdateConversationRequest(conversation=conversation_pb2.Conversation(id=conversation.id))
            update.conversation.name = "renamed over gRPC"
            update.update_mask.paths.append("name")
            rpc: Future[Any] = pool.submit(api.conversations.UpdateConversation, update, timeout=60)
            wait_until_in_flight(server, waiting_writers=2)

            server.proc.terminate()
            terminated = time.monotonic()
            assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(StopIteration):  # the Watch ends: it must not hold the gRPC drain
                next(watch)
            eventually(lambda: refused(server.http_base), "new REST connections are refused")
            # Hold on past uvicorn's own 5 s drain limit: the grace in force is CONVHUB_SHUTDOWN_GRACE.
            time.sleep(max(0.0, terminated + 6 - time.monotonic()))
            assert not rest.done() and not rpc.done(), "the calls were meant to be still in flight"

        response = rest.result(timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["conversation"]["id"] == conversation.id
        assert rpc.result(timeout=60).name == "renamed over gRPC"
        assert server.proc.wait(timeout=60) == 0
        client.close()
        assert server.stored("slow over REST") == 1
        output = server.output_after_exit()
    steps = [line.split("shutdown: ", 1)[1] for line in output.splitlines() if "shutdown: " in line]
    expected = [
        "health NOT_SERVING",
        "ending event subscriptions",
        "REST stops accepting connections",
        "stopping workers: doorbell-listener, webhook-process, event-broadcaster, event-pruner",
        "gRPC stops accepting calls",
        "closing the database",
    ]
    assert len(steps) == len(expected), steps
    for step, start in zip(steps, expected, strict=True):
        assert step.startswith(start), steps


@pytest.mark.parametrize("backend", BACKENDS)
def test_calls_still_running_at_the_grace_deadline_answer_with_their_result_or_leave_nothing(
    backend: str, tmp_path: Path
) -> None:
    """Never "failed but stored": a call cut off by the deadline does not commit once its lock frees up."""
    with (
        serving(backend, tmp_path, shutdown_grace="1.5") as server,
        grpc.insecure_channel(server.grpc_target) as channel,
        ThreadPoolExecutor(8) as pool,
    ):
        api = Api.for_tenant(channel, server.tenant.metadata)
        run = uuid.uuid4().hex[:8]
        clients = [server.rest_client() for _ in range(6)]
        with writes_blocked(server):
            rest = {
                f"rest {run} {i}": pool.submit(server.rest_ingest, c, f"rest {run} {i}") for i, c in enumerate(clients)
            }
            rpc = {f"grpc {run} {i}": pool.submit(_grpc_ingest, api, f"grpc {run} {i}") for i in range(2)}
            wait_until_in_flight(server, waiting_writers=1)
            server.proc.terminate()
            outcomes: dict[str, str] = {text: _rest_outcome(f) for text, f in rest.items()}
            outcomes |= {text: _grpc_outcome(f) for text, f in rpc.items()}
            # Every call has its answer while the lock is still held: now let the stuck writes try to commit.
        assert server.proc.wait(timeout=60) == 0
        server.output_after_exit()
        for client in clients:
            client.close()
        for text, outcome in outcomes.items():
            assert outcome not in ("500", "INTERNAL", "UNKNOWN"), outcomes
            assert server.stored(text) == (1 if outcome in ("200", "OK") else 0), (text, outcome, outcomes)
        assert sum(outcome == "503" for outcome in outcomes.values()) >= 1, f"nothing was cut off: {outcomes}"


def _grpc_ingest(api: Api, text: str) -> ingest_service_pb2.IngestMessageResponse:
    request = ingest_service_pb2.IngestMessageRequest(
        channel=common_pb2.CONVERSATION_TYPE_MESSAGE,
        self=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target=SELF),
        peer=common_pb2.Address(type=common_pb2.ADDRESS_TYPE_TEL, target="+15550001111"),
        text=text,
    )
    return api.ingest.IngestMessage(request, timeout=60)


def _rest_outcome(future: Future[httpx.Response]) -> str:
    try:
        return str(future.result(timeout=60).status_code)
    except httpx.TransportError as exc:  # refused or closed before answering: never reached a handler
        return type(exc).__name__


def _grpc_outcome(future: Future[Any]) -> str:
    try:
        future.result(timeout=60)
    except grpc.RpcError as exc:
        return str(exc.code().name)
    return "OK"
