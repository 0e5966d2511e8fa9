"""SQLite: nothing waits for the write lock on the event loop.

SQLite has one write lock per file, and other processes (the CLI, a backup,
a second server) can hold it. A transaction takes it at BEGIN IMMEDIATE,
waiting up to `busy_timeout`. Waiting on the event loop would freeze every
call and health check of the process, so:

* on the event loop, BEGIN IMMEDIATE does not wait (busy_timeout 0); if the
  lock is taken it raises WriteWouldWait before anything was written, and
  the dispatcher runs the call again on a worker thread;
* on a thread, it waits up to the lock timeout, then fails with
  DatabaseBusy (UNAVAILABLE, retryable).

This process's own writers queue on a lock of their own before BEGIN
IMMEDIATE and leave it when their connection goes back to the pool (after
COMMIT or ROLLBACK): the lock wakes the next writer the moment the last one
is done. Writers of other processes (the webhook worker process, a second
server, the CLI) are met at BEGIN IMMEDIATE itself, which is tried again
every `POLL_MIN`..`POLL_MAX` seconds until the lock timeout. SQLite's own busy
handler is off on writer connections (busy_timeout 0): it polls by sleeping 1,
2, 5, 10, ... 100 ms, so a writer meeting another on it waited 50-100 ms for
a lock freed after a millisecond, and one unlucky several times in a row
starved (measured: delivery claims waiting up to 135 ms behind send batches
at 200 sends/s, the p99 of issue 11 (b')). Once BEGIN IMMEDIATE has the lock
nothing else in the transaction waits for one (WAL mode).

When the lock is free, which is nearly always, writes keep running inline:
a transaction takes microseconds.

Readers (WAL mode) never wait for writers; their busy_timeout is 0 too, so a
rare SQLITE_BUSY (another process recovering the WAL) answers at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, event

from convhub.server.store.faults import DatabaseBusy, WriteWouldWait, is_sqlite_busy

_HOLDS_WRITER = "convhub.holds_writer_lock"  # on a pool record: its connection holds the process's writer lock
# How often BEGIN IMMEDIATE is tried again while another process holds SQLite's write lock: from POLL_MIN,
# doubling up to POLL_MAX (a retry costs one failed lock attempt, microseconds).
POLL_MIN = 0.0005
POLL_MAX = 0.002


def on_event_loop() -> bool:
    """True when called from a thread running an asyncio event loop (where nothing may block)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def begin_immediate_off_loop(engine: Engine, *, lock_timeout: float) -> None:
    """Writer transactions on `engine` start with BEGIN IMMEDIATE, waiting for the lock only off the loop."""
    writer = threading.Lock()  # this process's writers, one at a time (module docstring)

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        inline = on_event_loop()
        record_info = conn.connection.record_info
        assert record_info is not None  # a pooled connection (the writer engine's pool)
        deadline = time.monotonic() + lock_timeout  # one lock timeout in all, queueing here included
        if not record_info.get(_HOLDS_WRITER):  # held from this checkout's first transaction until checkin
            if not _take(writer, inline, lock_timeout):
                if inline:
                    raise WriteWouldWait()
                raise DatabaseBusy("the database stayed locked by another writer")
            record_info[_HOLDS_WRITER] = True
        # Take the write lock at BEGIN, so two writers queue here instead of one failing with
        # "database is locked" on lock upgrade. On the DB-API connection: a refused attempt is routine
        # here, not an error for SQLAlchemy to handle.
        dbapi_conn = conn.connection.dbapi_connection
        assert dbapi_conn is not None  # checked out
        pause = POLL_MIN
        while True:
            try:
                dbapi_conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if not is_sqlite_busy(exc):
                    raise
                if inline:
                    raise WriteWouldWait() from None
                left = deadline - time.monotonic()
                if left <= 0:
                    raise DatabaseBusy("the database stayed locked by another writer") from None
            time.sleep(min(pause, left))
            pause = min(pause * 2, POLL_MAX)

    @event.listens_for(engine.pool, "checkin")
    def _leave_writer_lock(_dbapi_conn: Any, record: Any) -> None:
        if record is not None and record.record_info.pop(_HOLDS_WRITER, False):
            writer.release()


def _take(lock: threading.Lock, inline: bool, timeout: float) -> bool:
    """The process's writer lock: never waiting on the event loop, up to `timeout` seconds on a thread."""
    return lock.acquire(blocking=False) if inline else lock.acquire(timeout=timeout)
