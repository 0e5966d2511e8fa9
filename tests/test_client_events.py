"""The Python client's event methods against the real server, including a subscription across a restart."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from convhub.client import AsyncConvhubClient, ConvhubClient, ConvhubError, OutOfRangeError, RetryPolicy
from convhub.client._base import resume_delay
from convhub.server.store.db import create_db_engine
from convhub.v1 import event_pb2
from tests.conftest import BACKENDS, Hub, Tenant, create_database, new_tenant, start_server, stop_server
from tests.eventsupport import head
from tests.support import Api

RECEIVED = event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED


def test_list_and_iter_events(hub: Hub, tenant: Tenant, channel: grpc.Channel) -> None:
    api = Api.for_tenant(channel, tenant.metadata)
    room = api.sms(text="a").conversation.id
    api.sms(peer="+15550008002", text="b")
    with ConvhubClient(hub.grpc_target, token=tenant.token) as client:
        assert [e.sequence for e in client.iter_events(page_size=3)] == list(range(1, 9))
        page = client.list_events(event_types=[RECEIVED], conversation_id=room)
        assert [e.message.text for e in page.result] == ["a"]
        with pytest.raises(OutOfRangeError):
            client.list_events(after_sequence=100)


@dataclass
class Restartable:
    """A server on a fixed port that can be stopped (SIGTERM or SIGKILL) and started again on its database."""

    backend: str
    url: str
    data_dir: Path
    target: str
    process: subprocess.Popen[str]

    def start(self) -> None:
        self.process, _, _, _ = start_server(self.url, data_dir=self.data_dir, grpc_address=self.target, http=False)

    def stop(self, how: signal.Signals) -> None:
        self.process.send_signal(how)
        stop_server(self.process)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=BACKENDS)
def restartable(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Restartable, Hub, Tenant]]:
    for url in create_database(request.param, tmp_path):
        target = f"127.0.0.1:{free_port()}"
        proc, _, _, lines = start_server(url, data_dir=tmp_path, grpc_address=target, http=False)
        server = Restartable(request.param, url, tmp_path, target, proc)
        engine = create_db_engine(url, pool_size=2)
        hub = Hub(request.param, url, target, None, proc, lines, engine)
        try:
            yield server, hub, new_tenant(hub)
        finally:
            stop_server(server.process)
            engine.dispose()


def write(target: str, tenant: Tenant, texts: list[str]) -> None:
    with grpc.insecure_channel(target) as ch:
        api = Api.for_tenant(ch, tenant.metadata)
        for text in texts:
            api.sms(text=text)


def test_sync_subscription_resumes_across_a_killed_and_restarted_server(
    restartable: tuple[Restartable, Hub, Tenant],
) -> None:
    server, hub, tenant = restartable
    write(server.target, tenant, ["a", "b", "c"])  # 1..8
    seen: list[int] = []
    failure: list[BaseException] = []
    done = threading.Event()

    def consume() -> None:
        try:
            with ConvhubClient(server.target, token=tenant.token) as client:
                for event in client.subscribe_events(after_sequence=0):
                    seen.append(event.sequence)
                    if event.sequence == 14:
                        break
        except BaseException as exc:  # reported below
            failure.append(exc)
        finally:
            done.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    wait_for(lambda: len(seen) >= 8)
    server.stop(signal.SIGKILL)  # no goodbye: the connection just drops
    server.start()
    write(server.target, tenant, ["d", "e", "f"])  # 9..14
    assert done.wait(60), f"the subscription did not resume (saw {seen})"
    assert not failure, failure
    assert seen == list(range(1, 15))
    assert head(hub.engine, tenant.customer_id) == 14


async def test_async_subscription_resumes_across_a_graceful_restart(
    restartable: tuple[Restartable, Hub, Tenant],
) -> None:
    server, _, tenant = restartable
    await asyncio.to_thread(write, server.target, tenant, ["a"])  # 1..4
    seen: list[int] = []
    async with AsyncConvhubClient(server.target, token=tenant.token) as client:
        events = client.subscribe_events(event_types=[RECEIVED])  # live, filtered
        reader = asyncio.ensure_future(anext(events))
        await asyncio.sleep(0.3)
        await asyncio.to_thread(write, server.target, tenant, ["b"])
        seen.append((await asyncio.wait_for(reader, 30)).sequence)
        await asyncio.to_thread(server.stop, signal.SIGTERM)  # the stream ends UNAVAILABLE, SHUTTING_DOWN
        await asyncio.to_thread(server.start)
        await asyncio.to_thread(write, server.target, tenant, ["c", "d"])
        for _ in range(2):
            seen.append((await asyncio.wait_for(anext(events), 60)).sequence)
        await events.aclose()
    assert seen == [6, 8, 10]  # the received events: b, then c and d written while it was reconnecting


def test_resume_decisions() -> None:
    policy = RetryPolicy(max_attempts=3, jitter=0.0)

    def error(code: grpc.StatusCode, reason: str | None = None) -> ConvhubError:
        return ConvhubError("x", code=code, reason=reason)

    assert resume_delay(error(grpc.StatusCode.UNAVAILABLE), 1, policy) == pytest.approx(0.1)
    assert resume_delay(error(grpc.StatusCode.RESOURCE_EXHAUSTED, "SUBSCRIBER_TOO_SLOW"), 1, policy) is not None
    assert resume_delay(None, 2, policy) == pytest.approx(0.2)  # ended without an error: reopen
    assert resume_delay(error(grpc.StatusCode.UNAVAILABLE), 3, policy) is None  # attempts in a row used up
    assert resume_delay(error(grpc.StatusCode.RESOURCE_EXHAUSTED, "QUOTA"), 1, policy) is None
    assert resume_delay(error(grpc.StatusCode.OUT_OF_RANGE), 1, policy) is None
    assert resume_delay(error(grpc.StatusCode.UNAUTHENTICATED), 1, policy) is None


def wait_for(check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
