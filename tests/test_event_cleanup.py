"""Cancelled subscriptions and shutdown leave nothing behind, measured from outside the server.

Tasks and subscriptions: the server runs under tests/task_probe_serve.py, a
test-only wrapper that reports them on SIGUSR1 (every gRPC call and every HTTP
stream runs in a task, so a leaked stream shows). Threads and file
descriptors (sockets, SQLite files): /proc/<pid>. PostgreSQL connections:
pg_stat_activity for the test database.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from sqlalchemy import text

from convhub.v1 import event_pb2, event_service_pb2, event_service_pb2_grpc
from tests.conftest import BACKENDS, Hub, new_tenant, running_hub
from tests.eventsupport import EventsApi
from tests.support import rich_error

PROBE_LAUNCHER = (str(Path(__file__).with_name("task_probe_serve.py")),)


@dataclass(frozen=True)
class Footprint:
    tasks: int
    subscriptions: int
    threads: int
    fds: int
    db_connections: int  # PostgreSQL backends serving the server (0 on SQLite: its files count as fds)


@dataclass
class ProbedHub:
    hub: Hub
    probe: Path

    def footprint(self) -> Footprint:
        pid = self.hub.process.pid
        self.probe.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR1)
        deadline = time.monotonic() + 10
        while not self.probe.exists():
            assert time.monotonic() < deadline, "the server did not answer the task probe"
            time.sleep(0.01)
        status = Path(f"/proc/{pid}/status").read_text()
        threads = int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        db_connections = 0
        if self.hub.backend == "postgresql":
            self.hub.engine.dispose()  # the test's own pooled connections must not count
            with self.hub.engine.connect() as conn:
                db_connections = conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                        # serve's own connections: not its webhook worker process's (server/worker_process.py)
                        " AND application_name <> 'convhub-webhook-worker'"
                    )
                ).scalar_one()
        inside = json.loads(self.probe.read_text())
        return Footprint(inside["tasks"], inside["subscriptions"], threads, fds, db_connections)


@pytest.fixture(scope="module", params=BACKENDS)
def probed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbedHub]:
    tmp_dir = tmp_path_factory.mktemp(f"probed-{request.param}")
    probe = tmp_dir / "tasks"
    env = {"CONVHUB_TEST_TASK_PROBE": str(probe)}
    for hub in running_hub(request.param, tmp_dir, env=env, launcher=PROBE_LAUNCHER):
        yield ProbedHub(hub, probe)


def back_to(now: Footprint, baseline: Footprint) -> bool:
    """Tasks, subscriptions and threads exactly as before; one more pooled database connection may have
    been opened meanwhile by a background worker: its socket on PostgreSQL, its database and WAL files on
    SQLite (2 fds). A leak per subscription (200 cycles) shows far above that."""
    return (
        (now.tasks, now.subscriptions, now.threads) == (baseline.tasks, baseline.subscriptions, baseline.threads)
        and baseline.fds <= now.fds <= baseline.fds + 2
        and baseline.db_connections <= now.db_connections <= baseline.db_connections + 1
    )


async def settle(probed: ProbedHub, baseline: Footprint) -> Footprint:
    """The footprint once it is back at the baseline (cleanup may take a few loop turns), or after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        now = await asyncio.to_thread(probed.footprint)
        if back_to(now, baseline) or time.monotonic() > deadline:
            return now
        await asyncio.sleep(0.2)


async def test_subscribing_and_cancelling_200_times_leaves_no_task_thread_socket_or_connection(
    probed: ProbedHub,
) -> None:
    hub = probed.hub
    tenant = new_tenant(hub)
    assert hub.http_base is not None
    async with grpc.aio.insecure_channel(hub.grpc_target) as ch:
        api = EventsApi(ch, tenant.metadata)
        await api.sms(text="something to replay")

        async def subscribe_and_cancel(grpc_streams: int, vanishing: int, rest_streams: int) -> None:
            for i in range(grpc_streams):
                if i % 3 == 0:  # cancelled once the replay delivered
                    sub = await api.subscribe(after=0)
                    await sub.reached(4)
                elif i % 3 == 1:  # cancelled at once, filtered
                    received = [event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED]
                    sub = await api.subscribe(after=0, event_types=received)
                else:  # cancelled while waiting live
                    sub = await api.subscribe()
                await sub.close()
            for _ in range(vanishing):  # a client that vanishes with its connection
                async with grpc.aio.insecure_channel(hub.grpc_target) as own:
                    stub = event_service_pb2_grpc.EventServiceStub(own)
                    call = stub.SubscribeEvents(event_service_pb2.SubscribeEventsRequest(), metadata=tenant.metadata)
                    await asyncio.sleep(0.01)
                del call
            headers = {"Authorization": f"Bearer {tenant.token}"}
            async with httpx.AsyncClient(base_url=hub.http_base, headers=headers, timeout=10) as rest:
                for i in range(rest_streams):  # REST streams: SSE and NDJSON, closed by the client
                    accept = {"Accept": "text/event-stream"} if i % 2 else {}
                    async with rest.stream(
                        "GET", "/v1.0/events:subscribe", params={"after_sequence": 0}, headers=accept
                    ) as r:
                        assert r.status_code == 200
                        await anext(r.aiter_bytes())

        # A first round fills the pools (a database connection per thread that read, ...): that is not a leak.
        await subscribe_and_cancel(30, 3, 8)
        baseline = await steady(probed)
        assert baseline.subscriptions == 0
        await subscribe_and_cancel(150, 10, 40)
        after = await settle(probed, baseline)
        assert back_to(after, baseline), (after, baseline)


async def steady(probed: ProbedHub) -> Footprint:
    """The footprint once two readings a second apart agree and no subscription is left (at most 20 s)."""
    deadline = time.monotonic() + 20
    last = await asyncio.to_thread(probed.footprint)
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        now = await asyncio.to_thread(probed.footprint)
        if now == last and now.subscriptions == 0:
            return now
        last = now
    return last


@pytest.mark.parametrize("backend", BACKENDS)
async def test_shutdown_ends_open_streams_at_once_with_the_sequence_to_resume_after(
    tmp_path_factory: pytest.TempPathFactory, backend: str
) -> None:
    """On SIGTERM open subscriptions end with UNAVAILABLE (not after the 10 s grace), so the drain is quick."""
    for hub in running_hub(backend, tmp_path_factory.mktemp(f"shutdown-{backend}")):
        tenant = new_tenant(hub)
        assert hub.http_base is not None
        async with (
            grpc.aio.insecure_channel(hub.grpc_target) as ch,
            httpx.AsyncClient(base_url=hub.http_base, timeout=30) as rest,
        ):
            api = EventsApi(ch, tenant.metadata)
            await api.sms()
            sub = await api.subscribe(after=0)
            await sub.reached(4)
            headers = {"Authorization": f"Bearer {tenant.token}", "Accept": "text/event-stream"}
            async with rest.stream("GET", "/v1.0/events:subscribe", headers=headers) as sse:
                assert sse.status_code == 200
                started = time.monotonic()
                hub.process.send_signal(signal.SIGTERM)
                body = b"".join([chunk async for chunk in sse.aiter_bytes()])
                assert sub.task is not None
                await asyncio.wait_for(sub.task, 15)
            await asyncio.to_thread(hub.process.wait, 30)
            stopped_after = time.monotonic() - started
        rich = rich_error(sub.error)  # type: ignore[arg-type]
        assert (rich.code, rich.reason, rich.metadata) == (
            grpc.StatusCode.UNAVAILABLE,
            "SHUTTING_DOWN",
            {"last_sequence": "4"},
        )
        last_frame = body.decode().strip().split("\n\n")[-1]
        assert json.loads(last_frame.removeprefix("data: "))["error"]["status"] == "UNAVAILABLE"
        assert stopped_after < 8, f"stopping took {stopped_after:.1f} s: streams held the drain"
