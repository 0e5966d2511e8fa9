"""The doorbell rings listeners after a transaction that wrote events commits, and never after a rollback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import text

from convhub.server.store.db import open_database, upgrade_schema
from convhub.server.store.doorbell import mark_events_written
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
