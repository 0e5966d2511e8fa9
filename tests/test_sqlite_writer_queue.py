"""SQLite: this process's writers queue on a lock of their own, never on SQLite's sleeping busy handler.

SQLite's busy handler polls by sleeping 1, 2, 5, ... 100 ms, so two writer
threads of one process meeting on it waited up to 100 ms for a lock freed
after a millisecond (store/sqlite_locks.py). These tests watch the statements
each connection runs (sqlite3's trace callback): a second writer issues its
BEGIN IMMEDIATE only after the first one's transaction ended, so it never
meets the file lock held by its own process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, text

from convhub.server.store.db import DatabaseTimeouts, create_db_engine


class Trace:
    """Every statement the engine's connections run, in order, with the thread that ran it."""

    def __init__(self, engine: Engine) -> None:
        self.lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

        @event.listens_for(engine, "connect")
        def _trace(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.set_trace_callback(self._seen)

    def _seen(self, statement: str) -> None:
        if statement.startswith("PRAGMA"):
            return  # settings (busy_timeout), not work
        with self._lock:
            self.lines.append((threading.current_thread().name, statement.strip().split()[0].upper()))

    def of(self, thread: str) -> list[str]:
        with self._lock:
            return [s for t, s in self.lines if t == thread]

    def index(self, thread: str, statement: str) -> int:
        with self._lock:
            return next(i for i, line in enumerate(self.lines) if line == (thread, statement))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'queue.db'}", pool_size=4, timeouts=DatabaseTimeouts(lock=5))
    engine.info = Trace(engine)  # type: ignore[attr-defined]  # before the first connection opens
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (x INTEGER)"))
    yield engine
    engine.dispose()


def _write(engine: Engine, value: int, hold: threading.Event | None = None) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": value})
        if hold is not None:
            assert hold.wait(10)


def test_second_writer_begins_only_after_the_first_commits(engine: Engine) -> None:
    trace: Trace = engine.info  # type: ignore[attr-defined]
    release = threading.Event()
    first = threading.Thread(target=_write, args=(engine, 1, release), name="first")
    first.start()
    deadline = time.monotonic() + 10
    while "INSERT" not in trace.of("first"):
        assert time.monotonic() < deadline, trace.lines
        time.sleep(0.005)
    second = threading.Thread(target=_write, args=(engine, 2), name="second")
    second.start()
    time.sleep(0.3)  # long enough for the second to reach BEGIN IMMEDIATE, had it not queued
    assert trace.of("second") == [], "the second writer went to SQLite's file lock its own process held"
    release.set()
    first.join(10)
    second.join(10)
    assert trace.of("second")[:2] == ["BEGIN", "INSERT"]
    assert trace.index("second", "BEGIN") > trace.index("first", "COMMIT")
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT x FROM t")).scalars()) == [1, 2]


def test_a_failed_transaction_lets_the_next_writer_in(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        raise RuntimeError("rolled back")
    done = threading.Thread(target=_write, args=(engine, 2), name="after")
    done.start()
    done.join(10)
    assert not done.is_alive(), "the rolled-back transaction kept this process's writer lock"
    with engine.connect() as conn:
        assert list(conn.execute(text("SELECT x FROM t")).scalars()) == [2]


def test_several_transactions_on_one_checkout_keep_the_lock(engine: Engine) -> None:
    """A connection that commits and begins again (alembic does) does not queue behind itself."""
    with engine.connect() as conn:
        for value in (1, 2, 3):
            with conn.begin():
                conn.execute(text("INSERT INTO t VALUES (:x)"), {"x": value})
    _write(engine, 4)
    with engine.connect() as conn:
        assert sorted(conn.execute(text("SELECT x FROM t")).scalars()) == [1, 2, 3, 4]
