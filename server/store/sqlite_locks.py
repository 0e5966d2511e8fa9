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

This process's own writers queue on a lock of their own before BEGIN
IMMEDIATE and leave it when their connection goes back to the pool (after
COMMIT or ROLLBACK). SQLite's busy handler is for other processes only: it
polls by sleeping 1, 2, 5, 10, ... 100 ms, so two of our threads meeting on
it could wait 50-100 ms for a lock freed after a millisecond, and a writer
unlucky several times in a row starved (measured: delivery claims waiting
up to 135 ms behind send batches at 200 sends/s, the p99 of issue 11 (b')).
The lock wakes the next writer the moment the last one is done.

When the lock is free, which is nearly always, writes keep running inline:
one process is SQLite's only writer and a transaction takes microseconds.
Readers (WAL mode) never wait for writers; their busy_timeout is 0 too, so a
rare SQLITE_BUSY (another process recovering the WAL) answers at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import OperationalError

from convhub.server.store.faults import DatabaseBusy, WriteWouldWait, is_sqlite_busy

_BUSY_MS = "convhub.busy_timeout_ms"  # the busy_timeout currently set on a pooled connection
_HOLDS_WRITER = "convhub.holds_writer_lock"  # on a pool record: its connection holds the process's writer lock
_SLACK_MS = 50  # a shorter wait for this process's lock leaves busy_timeout as it is (no PRAGMA per transaction)


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
    writer = threading.Lock()  # this process's writers, one at a time (module docstring)

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Connection) -> None:
        inline = on_event_loop()
        record_info = conn.connection.record_info
        assert record_info is not None  # a pooled connection (the writer engine's pool)
        busy_ms = 0 if inline else wait_ms
        if not record_info.get(_HOLDS_WRITER):  # held from this checkout's first transaction until checkin
            started = time.monotonic()
            if not _take(writer, inline, lock_timeout):
                if inline:
                    raise WriteWouldWait()
                raise DatabaseBusy("the database stayed locked by another writer")
            record_info[_HOLDS_WRITER] = True
            waited_ms = (time.monotonic() - started) * 1000
            if waited_ms > _SLACK_MS:  # one lock timeout in all, queueing here included
                busy_ms = max(1, round(wait_ms - waited_ms))
        set_busy_timeout(conn.connection.dbapi_connection, conn.info, busy_ms)
        try:
            # Take the write lock at BEGIN, so two writers queue on busy_timeout
            # instead of one failing with "database is locked" on lock upgrade.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        except OperationalError as exc:
            if inline and is_sqlite_busy(exc):
                raise WriteWouldWait() from None
            raise

    @event.listens_for(engine.pool, "checkin")
    def _leave_writer_lock(_dbapi_conn: Any, record: Any) -> None:
        if record is not None and record.record_info.pop(_HOLDS_WRITER, False):
            writer.release()


def _take(lock: threading.Lock, inline: bool, timeout: float) -> bool:
    """The process's writer lock: never waiting on the event loop, up to `timeout` seconds on a thread."""
    return lock.acquire(blocking=False) if inline else lock.acquire(timeout=timeout)
