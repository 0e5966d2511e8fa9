"""The doorbell rings listeners after a transaction that wrote events commits, and never after a rollback."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from convhub.server.store.db import open_database, upgrade_schema
from convhub.server.store.doorbell import RING_HOLD, Doorbell, PipeDoorbell, mark_events_written
from tests import eventsupport
from tests.conftest import secret_box_for_tests


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = open_database(f"sqlite:///{tmp_path / 'bell.db'}", workers=2, secrets=secret_box_for_tests())
    upgrade_schema(database.writer)
    yield database
    database.dispose()


async def test_commit_that_wrote_events_rings_every_listener(db) -> None:  # type: ignore[no-untyped-def]
    first, second = db.doorbell.listener(), db.doorbell.listener()
    with db.writer.begin() as conn:
        conn.execute(text("SELECT 1"))
        mark_events_written(conn)
        assert not await first.wait(0.05), "rang before the commit"
    assert await first.wait(2)
    assert await second.wait(2)
    assert not await first.wait(0.05), "one commit, one ring"


async def test_rolled_back_write_rings_nobody(db) -> None:  # type: ignore[no-untyped-def]
    listener = db.doorbell.listener()
    with pytest.raises(RuntimeError), db.writer.begin() as conn:
        mark_events_written(conn)
        raise RuntimeError("abort")
    with db.writer.begin() as conn:  # the same pooled connection, a write without events
        conn.execute(text("SELECT 1"))
    assert not await listener.wait(0.1)


async def test_ring_from_another_thread_wakes_a_waiting_listener(db) -> None:  # type: ignore[no-untyped-def]
    listener = db.doorbell.listener()
    waiter = asyncio.create_task(listener.wait(5))
    await asyncio.sleep(0)
    await asyncio.to_thread(db.doorbell.ring)
    assert await asyncio.wait_for(waiter, 2)


async def test_rings_reach_another_process_through_a_pipe(db) -> None:  # type: ignore[no-untyped-def]
    """`serve` on SQLite wakes its webhook worker process this way (server/worker_process.py)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    there = Doorbell()  # the other process's doorbell, read from the pipe
    pipe = PipeDoorbell(read_end, there)
    await pipe.start()
    try:
        listener = there.listener()
        db.doorbell.forward_to(write_end)
        with db.writer.begin() as conn:
            mark_events_written(conn)
        assert await listener.wait(2), "the ring did not cross the pipe"
        db.doorbell.forward_to(None)  # closes the write end: the reader sees the pipe end and stops watching
        with pytest.raises(OSError):
            os.fstat(write_end)
        with db.writer.begin() as conn:
            mark_events_written(conn)
        assert not await listener.wait(0.2), "rang after forwarding stopped"
    finally:
        await pipe.stop()
        os.close(read_end)


async def test_rings_through_the_pipe_in_quick_succession_ring_once_per_hold() -> None:
    """The serve process rings per commit; its webhook worker wakes at most once per RING_HOLD, and misses none."""
    read_end, write_end = os.pipe()
    there = Doorbell()
    rung: list[float] = []
    there.ring = lambda: rung.append(time.monotonic())  # type: ignore[method-assign]
    pipe = PipeDoorbell(read_end, there)
    await pipe.start()
    try:

        def commits() -> None:  # 40 commits, one every 2 ms, on another thread like the API's writers
            for _ in range(40):
                os.write(write_end, b"\0")
                time.sleep(0.002)

        started = time.monotonic()
        await asyncio.to_thread(commits)
        took = time.monotonic() - started
        await asyncio.sleep(RING_HOLD * 3)
        assert rung, "no ring crossed the pipe"
        assert len(rung) <= took / RING_HOLD + 2, f"{len(rung)} wake-ups for 40 rings in {took * 1000:.0f} ms"
        count = len(rung)
        await asyncio.sleep(RING_HOLD * 2)
        os.write(write_end, b"\0")  # a ring after a quiet spell still crosses
        await eventsupport.wait_until(lambda: len(rung) > count, timeout=2)
    finally:
        await pipe.stop()
        os.close(read_end)
        os.close(write_end)
