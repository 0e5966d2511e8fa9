"""SQLite: nothing waits for the write lock on the event loop.

SQLite has one write lock per file, and other processes (the CLI, a backup,
a second server) can hold it. A transaction takes it at BEGIN IMMEDIATE,
waiting up to `busy_timeout`. Waiting on the event loop would freeze every
call and health check of the process, so:

* on the event loop, BEGIN IMMEDIATE does not wait (busy_timeout 0); if the
  lock is taken it raises WriteWouldWait before anything was written, and
  the dispatcher runs the call again on a worker thread;
* on a thread, it waits up to the lock timeout, then fails with "database is
  locked", which the store classifies as DatabaseBusy (UNAVAILABLE, retryable).

When the lock is free, which is nearly always, writes keep running inline:
one process is SQLite's only writer and a transaction takes microseconds.
Readers (WAL mode) never wait for writers; their busy_timeout is 0 too, so a
rare SQLITE_BUSY (another process recovering the WAL) answers at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import OperationalError

from convhub.server.store.faults import WriteWouldWait, is_sqlite_busy

_BUSY_MS = "convhub.busy_timeout_ms"  # the busy_timeout currently set on a pooled connection


def on_event_loop() -> bool:
    """True when called from a thread running an asyncio event loop (where nothing may block)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def set_busy_timeout(dbapi_conn: Any, info: dict[Any, Any], milliseconds: int) -> None:
    if info.get(_BUSY_MS) != milliseconds:
        dbapi_conn.execute(f"PRAGMA busy_timeout={int(milliseconds)}")
        info[_BUSY_MS] = milliseconds


def begin_immediate_off_loop(engine: Engine, *, lock_timeout: float) -> None:
    """Writer transactions on `engine` start with BEGIN IMMEDIATE, waiting for the lock only off the loop."""
    wait_ms = round(lock_timeout * 1000)

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        inline = on_event_loop()
        set_busy_timeout(conn.connection.dbapi_connection, conn.info, 0 if inline else wait_ms)
        try:
            # Take the write lock at BEGIN, so two writers queue on busy_timeout
            # instead of one failing with "database is locked" on lock upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except OperationalError as exc:
            if inline and is_sqlite_busy(exc):
                raise WriteWouldWait() from None
            raise
