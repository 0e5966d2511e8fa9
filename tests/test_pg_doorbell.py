"""The doorbell across processes: what one `convhub serve` commits rings a listener in another process.

Two real processes on one PostgreSQL database: the server ingests over gRPC;
a small script runs `NotifyListener` (the worker every server runs) with a
Doorbell listener and prints a line each time it is rung.
"""

from __future__ import annotations

import asyncio
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
import sqlalchemy

from convhub.server.events.outbox import append_events
from convhub.server.store.customers import create_customer, create_token
from convhub.server.store.db import Database, create_db_engine, new_id
from convhub.server.store.pg_doorbell import ANNOUNCE_HOLD, EVENTS_CHANNEL, NotifyListener, libpq_conninfo
from convhub.v1 import conversation_pb2, event_pb2
from tests.conftest import Tenant, create_database, migrated_databases, start_server, stop_server
from tests.support import Api

LISTENER_SCRIPT = """
import asyncio, sys
from convhub.server.store.doorbell import Doorbell
from convhub.server.store.pg_doorbell import NotifyListener

async def main():
    doorbell = Doorbell()
    listener = doorbell.listener()
    worker = NotifyListener(sys.argv[1], doorbell, min_backoff=0.05, max_backoff=0.5)
    await worker.start()
    while True:
        if await listener.wait(60):
            print("rung", flush=True)

asyncio.run(main())
"""


class Lines:
    """A child process's stdout lines, read on a thread so the test can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self._queue.put(line.strip())

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float) -> str | None:
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def drain(self) -> list[str]:
        lines = []
        while (line := self.next(0.0)) is not None:
            lines.append(line)
        return lines


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Tenant]]:
    """A `convhub serve` on a fresh PostgreSQL database: its URL, gRPC target and a tenant."""
    tmp = tmp_path_factory.mktemp("pgbell")
    for url in create_database("postgresql", tmp):
        proc, grpc_target, _http, _lines = start_server(url, data_dir=tmp, http=False)
        engine = create_db_engine(url, pool_size=1)
        try:
            customer_id = create_customer(engine, "bell")
            yield url, grpc_target, Tenant(customer_id, create_token(engine, customer_id).token)
        finally:
            engine.dispose()
            assert stop_server(proc) == 0


@pytest.fixture
def listener(pg_server: tuple[str, str, Tenant]) -> Iterator[Lines]:
    url = pg_server[0]
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER_SCRIPT, url], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = Lines(proc)
    try:
        assert lines.next(30) == "rung", "the listener rings once when it has connected"
        yield lines
    finally:
        proc.kill()
        proc.wait()


def _ingest(grpc_target: str, tenant: Tenant, text: str) -> None:
    with grpc.insecure_channel(grpc_target) as channel:
        Api.for_tenant(channel, tenant.metadata).sms(text=text)


def _rung_within(lines: Lines, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        line = lines.next(remaining)
        if line == "rung":
            return True
    return False


def test_a_commit_in_one_process_rings_a_listener_in_another(
    pg_server: tuple[str, str, Tenant], listener: Lines
) -> None:
    _url, grpc_target, tenant = pg_server
    assert not _rung_within(listener, 0.5), "rung with nothing committed"
    for i in range(3):
        _ingest(grpc_target, tenant, f"hello {i}")
        assert _rung_within(listener, 20), f"ingest {i} committed events but rang nobody in the other process"
        listener.drain()


def test_the_listener_reconnects_and_rings_after_its_connection_is_killed(
    pg_server: tuple[str, str, Tenant], listener: Lines
) -> None:
    url, grpc_target, tenant = pg_server
    with psycopg.connect(libpq_conninfo(url), autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = 'convhub-doorbell' AND datname = current_database()"
        ).fetchone()
    assert killed is not None and killed[0] >= 1
    # Each listener rings once on reconnecting (the server's own listener was killed too).
    assert _rung_within(listener, 20), "no ring after the listener's connection was killed"
    listener.drain()
    _ingest(grpc_target, tenant, "after the reconnect")
    assert _rung_within(listener, 20), "the reconnected listener was not rung by a commit"


def test_a_listener_without_its_database_keeps_retrying() -> None:
    """A listener whose database is unreachable keeps retrying quietly instead of crashing its process."""
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER_SCRIPT, "postgresql+psycopg://postgres@127.0.0.1:1/nowhere"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = Lines(proc)
    seen: list[str] = []
    try:
        while sum("reconnecting" in line for line in seen) < 3:  # three failed attempts, each logged
            line = lines.next(30)
            assert line is not None, f"no retry logged: {seen}"
            seen.append(line)
        assert proc.poll() is None, "the listener process died on a connection failure"
    finally:
        proc.kill()
        proc.wait()
    assert not any("Traceback" in line for line in seen), seen


@pytest.fixture
def pg_db(tmp_path: Path) -> Iterator[Database]:
    """A migrated PostgreSQL database opened in-process, as a server opens it (its doorbell attached)."""
    yield from migrated_databases("postgresql", tmp_path)


def test_a_commit_names_its_doorbell_in_the_notification(pg_db: Database) -> None:
    customer = create_customer(pg_db.writer, "named")
    with psycopg.connect(libpq_conninfo(pg_db.writer.url), autocommit=True) as other:
        other.execute(f"LISTEN {EVENTS_CHANNEL}")
        with pg_db.writer.begin() as conn:
            room = conversation_pb2.Conversation(id=new_id())
            append_events(conn, customer, [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, room)] * 2)
        notes = list(other.notifies(timeout=20, stop_after=1))
    assert [n.payload for n in notes] == [pg_db.doorbell.token]


async def test_a_listener_skips_its_own_process_notifications(pg_db: Database) -> None:
    """Its own commits rang the doorbell on check-in already; another process's still ring it."""
    rings: list[int] = []
    pg_db.doorbell.ring = lambda: rings.append(1)  # type: ignore[method-assign]
    worker = NotifyListener(pg_db.writer.url, pg_db.doorbell, min_backoff=0.05)
    await worker.start()
    try:
        for _ in range(200):  # it rings once when connected (LISTEN is in place from then on)
            if rings:
                break
            await asyncio.sleep(0.05)
        assert rings == [1], "the listener did not connect"
        rings.clear()

        def notify_from_elsewhere() -> None:  # one transaction: both arrive together, in this order
            with psycopg.connect(libpq_conninfo(pg_db.writer.url)) as other:
                other.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, pg_db.doorbell.token))
                other.execute("SELECT pg_notify(%s, %s)", (EVENTS_CHANNEL, "another-process"))

        await asyncio.to_thread(notify_from_elsewhere)
        for _ in range(200):
            if rings:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # room for a second ring, were there one
        assert rings == [1], "rung for its own doorbell's notification, or not for the other's"
    finally:
        await worker.stop()


async def test_a_running_listener_announces_commits_after_them_a_burst_as_few(pg_db: Database) -> None:
    """With the worker running, commits do not NOTIFY inside their transaction: the worker NOTIFYs after them, at
    most once per ANNOUNCE_HOLD, and the last commit of a burst is always announced. Stopped, the in-transaction
    NOTIFY is back."""
    customer = create_customer(pg_db.writer, "announced")
    statements: list[str] = []
    sqlalchemy.event.listen(pg_db.writer, "before_cursor_execute", lambda *args: statements.append(args[2]))
    received: list[float] = []
    listening = threading.Event()
    done = threading.Event()

    def listen() -> None:  # another process's view: a plain LISTEN connection, arrival times recorded
        with psycopg.connect(libpq_conninfo(pg_db.writer.url), autocommit=True) as other:
            other.execute(f"LISTEN {EVENTS_CHANNEL}")
            listening.set()
            while not done.is_set():
                for _ in other.notifies(timeout=0.05):
                    received.append(time.monotonic())

    def commits(count: int) -> float:
        room = conversation_pb2.Conversation(id=new_id())
        for _ in range(count):
            with pg_db.writer.begin() as conn:
                append_events(conn, customer, [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, room)])
            time.sleep(0.002)
        return time.monotonic()

    listener_thread = threading.Thread(target=listen, daemon=True)
    listener_thread.start()
    assert await asyncio.to_thread(listening.wait, 10)
    worker = NotifyListener(pg_db.writer.url, pg_db.doorbell, min_backoff=0.05)
    await worker.start()
    try:
        started = time.monotonic()
        last_commit = await asyncio.to_thread(commits, 30)
        await asyncio.sleep(0.5)
        took = last_commit - started
        assert not [s for s in statements if "pg_notify" in s], "a transaction still NOTIFYs inside itself"
        assert received, "no commit was announced"
        assert len(received) <= took / ANNOUNCE_HOLD + 2, f"{len(received)} notifications for 30 commits"
        assert received[-1] > last_commit - 0.002, "the burst's last commit was not announced after it"
    finally:
        await worker.stop()
    statements.clear()
    await asyncio.to_thread(commits, 1)
    assert [s for s in statements if "pg_notify" in s], "stopped, commits must NOTIFY inside their transaction"
    done.set()
    listener_thread.join(5)


async def test_a_commit_is_announced_after_the_announcing_connection_was_killed(pg_db: Database) -> None:
    """A dead announcing connection is found only when used: the commit is announced on a fresh one, not lost."""
    customer = create_customer(pg_db.writer, "reannounced")
    room = conversation_pb2.Conversation(id=new_id())
    worker = NotifyListener(pg_db.writer.url, pg_db.doorbell, min_backoff=0.05)
    await worker.start()
    try:
        with psycopg.connect(libpq_conninfo(pg_db.writer.url), autocommit=True) as other:
            other.execute(f"LISTEN {EVENTS_CHANNEL}")
            for attempt in range(2):  # the first commit opens the announcing connection, then it is killed
                with pg_db.writer.begin() as conn:
                    append_events(conn, customer, [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, room)])
                notes = await asyncio.to_thread(lambda: list(other.notifies(timeout=10, stop_after=1)))
                assert [n.payload for n in notes] == [pg_db.doorbell.token], f"commit {attempt} not announced"
                killed = other.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE application_name = 'convhub-doorbell-announce' AND datname = current_database()"
                ).fetchone()
                assert killed is not None and killed[0] == 1
                await asyncio.sleep(0.1)
    finally:
        await worker.stop()
