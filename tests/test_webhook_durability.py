"""Webhooks survive `kill -9` and are shared by replicas: every event arrives, none twice in normal operation."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import create_db_engine, upgrade_schema
from convhub.server.store.models import Event, WebhookDelivery
from convhub.v1 import webhook_pb2, webhook_service_pb2, webhook_service_pb2_grpc
from tests.conftest import Tenant, create_database, start_server, stop_server
from tests.support import Api, Bound
from tests.webhook_receiver import Received, Receiver, drain_output, run_receiver

ENV = {"CONVHUB_WEBHOOK_RETRY_SCHEDULE": "0,0.3,0.3,0.3", "CONVHUB_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}
events_table = Event.__table__
deliveries_table = WebhookDelivery.__table__


class Server:
    """One `convhub serve` process whose output is drained."""

    def __init__(self, url: str, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.proc, self.grpc_target, _, self.lines = start_server(url, data_dir=data_dir, env={**ENV, **(env or {})})
        drain_output(self.proc, self.lines)
        self.channel = grpc.insecure_channel(self.grpc_target)

    def api(self, tenant: Tenant) -> Api:
        return Api.for_tenant(self.channel, tenant.metadata)

    def stop(self) -> None:
        self.channel.close()
        stop_server(self.proc)


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from create_database(request.param, tmp_path)


def make_tenant(url: str) -> tuple[Tenant, Any]:
    engine = create_db_engine(url, pool_size=2)
    upgrade_schema(engine)
    customer_id = create_customer(engine, "durable")
    return Tenant(customer_id, create_token(engine, customer_id).token), engine


def add_endpoint(server: Server, tenant: Tenant, url: str) -> str:
    stub = Bound(webhook_service_pb2_grpc.WebhookServiceStub(server.channel), tenant.metadata)
    request = webhook_service_pb2.CreateWebhookEndpointRequest(webhook_endpoint=webhook_pb2.WebhookEndpoint(url=url))
    return str(stub.CreateWebhookEndpoint(request).id)


def event_log(engine: Any, customer_id: str) -> list[Any]:
    with engine.connect() as conn:
        return conn.execute(
            select(events_table.c.sequence, events_table.c.id)
            .where(events_table.c.customer_id == customer_id)
            .order_by(events_table.c.sequence)
        ).all()


def room_of(r: Received) -> str:
    data = r.json["data"]
    return str(data.get("conversation_id") or data["id"])


def assert_in_order_per_conversation(received: list[Received], sequence: dict[str, int]) -> None:
    first_seen: dict[str, list[int]] = {}
    seen: set[str] = set()
    for r in received:
        if r.webhook_id not in seen:
            seen.add(r.webhook_id)
            first_seen.setdefault(room_of(r), []).append(sequence[r.webhook_id])
    for room, seqs in first_seen.items():
        assert seqs == sorted(seqs), (room, seqs)


def wait_all(receiver: Receiver, ids: set[str], timeout: float) -> None:
    receiver.wait_for(lambda: ids <= {r.webhook_id for r in receiver.delivered()}, timeout, "every event")


@pytest.mark.parametrize("database", ["sqlite", "postgresql"], indirect=True)
def test_kill_9_mid_backlog_loses_nothing_and_keeps_webhook_ids(database: str, tmp_path: Path) -> None:
    tenant, engine = make_tenant(database)
    with run_receiver() as receiver:
        receiver.respond = lambda r: (time.sleep(0.05), (200, {}))[1]  # slow enough for a backlog to build
        server = Server(database, tmp_path)
        try:
            add_endpoint(server, tenant, receiver.base_url)
            api = server.api(tenant)
            for i in range(40):
                api.sms(peer=f"+155500077{i % 4:02d}", text=f"m{i}")
            receiver.wait_for(lambda: len(receiver.delivered()) >= 5, 30, "the first deliveries")
            server.proc.kill()  # SIGKILL: no drain, leases stay behind
            server.proc.wait()
        finally:
            server.stop()
        before = len(receiver.received())
        log = event_log(engine, tenant.customer_id)
        assert before < len(log), "the backlog should not have drained before the kill"
        restarted = Server(database, tmp_path)
        try:
            # Leases of the killed process expire (attempt timeout + margin), then its work is redone.
            wait_all(receiver, {e.id for e in log}, 90)
        finally:
            restarted.stop()
    sequence = {e.id: e.sequence for e in log}
    assert set(sequence) == {r.webhook_id for r in receiver.delivered()}
    assert_in_order_per_conversation(receiver.delivered(), sequence)
    with engine.connect() as conn:
        statuses = conn.execute(select(deliveries_table.c.status)).scalars().all()
    assert len(statuses) == len(log) and set(statuses) == {"succeeded"}
    engine.dispose()


@pytest.mark.parametrize("database", ["postgresql"], indirect=True)
def test_two_replicas_share_deliveries_and_send_each_event_once(database: str, tmp_path: Path) -> None:
    tenant, engine = make_tenant(database)
    with run_receiver() as receiver:
        servers = [Server(database, tmp_path / "a"), Server(database, tmp_path / "b")]
        try:
            add_endpoint(servers[0], tenant, receiver.base_url)
            apis = itertools.cycle([s.api(tenant) for s in servers])
            errors: list[BaseException] = []

            def writer(offset: int) -> None:
                try:
                    for i in range(30):
                        next(apis).sms(peer=f"+155500088{(i + offset) % 6:02d}", text=f"w{offset}-{i}")
                except BaseException as exc:  # surfaced below
                    errors.append(exc)

            threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert not errors
            log = event_log(engine, tenant.customer_id)
            wait_all(receiver, {e.id for e in log}, 60)
            time.sleep(1.0)  # a duplicate would arrive now
        finally:
            for s in servers:
                s.stop()
    ids = [r.webhook_id for r in receiver.delivered()]
    assert len(ids) == len(set(ids)) == len(log)  # every event once, none twice
    assert_in_order_per_conversation(receiver.delivered(), {e.id: e.sequence for e in log})
    engine.dispose()
