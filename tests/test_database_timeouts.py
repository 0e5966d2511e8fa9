"""The configured database timeouts reach the database, and migrations are not cut short by them."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from convhub.server.store.db import DatabaseTimeouts, create_db_engine, migrate, open_database
from convhub.server.store.faults import DatabaseBusy, classify
from tests.conftest import create_database, secret_box_for_tests

TIMEOUTS = DatabaseTimeouts(connect=3, read=1.5, statement=0.7, lock=3)


def test_postgresql_sessions_carry_the_server_side_limits(tmp_path: Path) -> None:
    for url in create_database("postgresql", tmp_path):
        migrate(url, TIMEOUTS)
        db = open_database(url, workers=1, secrets=secret_box_for_tests(), timeouts=TIMEOUTS)
        try:
            with db.writer.connect() as conn:
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "700ms"
                assert conn.exec_driver_sql("SHOW lock_timeout").scalar() == "3s"
                # The server gives up first, on a connection that stays usable: a retryable fault, not a bug.
                with pytest.raises(OperationalError) as slow:
                    conn.exec_driver_sql("SELECT pg_sleep(1)")
                assert isinstance(classify(slow.value), DatabaseBusy)
                conn.rollback()
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
            with db.read() as conn:
                assert conn.exec_driver_sql("SHOW statement_timeout").scalar() == "1500ms"
        finally:
            db.dispose()


def test_migrations_run_without_the_statement_limit(tmp_path: Path) -> None:
    """Under a 1 ms statement limit the schema's DDL is cancelled (57014); migrate() lifts it for itself."""
    for url in create_database("postgresql", tmp_path):
        migrate(url, DatabaseTimeouts(statement=0.001))
        engine = create_db_engine(url, pool_size=1)
        try:
            with engine.connect() as conn:
                assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 0
        finally:
            engine.dispose()


def test_sqlite_writers_wait_for_the_lock_and_readers_never(tmp_path: Path) -> None:
    """Another process's write lock: a writer waits for it (retrying BEGIN IMMEDIATE, not SQLite's sleeping
    busy handler) and gets in soon after it is freed; a reader never waits; past the lock timeout, DatabaseBusy."""
    path = tmp_path / "timeouts.db"
    url = f"sqlite:///{path}"
    migrate(url, TIMEOUTS)
    db = open_database(url, workers=1, secrets=secret_box_for_tests(), timeouts=TIMEOUTS)
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)  # as another process would
    try:
        other.execute("BEGIN IMMEDIATE")
        held = 0.34  # SQLite's busy handler would try at 328 ms, then at 428 ms
        released: list[float] = []
        threading.Timer(held, lambda: (other.execute("ROLLBACK"), released.append(time.monotonic()))).start()
        started = time.monotonic()
        with db.read() as conn:
            assert conn.execute(text("SELECT count(*) FROM customers")).scalar() == 0
        assert time.monotonic() - started < held / 2, "a reader waited for the writer"
        with db.writer.begin() as conn:
            conn.execute(text("CREATE TABLE probe (x INTEGER)"))
        late = time.monotonic() - released[0]
        # SQLite's busy handler sleeps up to 100 ms at a time; the retries come every few milliseconds.
        assert late < 0.05, f"the writer got the lock {late * 1000:.0f} ms after it was freed"
        other.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        with pytest.raises(DatabaseBusy), db.writer.begin() as conn:
            conn.execute(text("INSERT INTO probe VALUES (1)"))
        assert TIMEOUTS.lock <= time.monotonic() - started < TIMEOUTS.lock + 1
        other.execute("ROLLBACK")
    finally:
        other.close()
        db.dispose()
