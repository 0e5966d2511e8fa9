"""Engine set-up for the two supported databases and schema upgrades on start."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry

from convhub.server.store.doorbell import Doorbell
from convhub.server.store.secrets import SecretBox

F = TypeVar("F", bound=Callable[..., Any])

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def now_us() -> int:
    """Current time in integer microseconds (the storage format of every tm_* column)."""
    return time.time_ns() // 1000


def new_id() -> str:
    """A random (version 4) UUID string; formatted by hand, at a third of uuid4()'s cost (ids are hot)."""
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


# RFC 9562 variant bits (10xx) for the first hex digit of the fourth group.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


def _sqlite_pragmas(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers run beside the writer; NORMAL sync is durable across
    # process crashes (only an OS crash can lose the last commits).
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _sqlite_begin_immediate(conn: Any) -> None:
    # Take the write lock at BEGIN, so two writers queue on busy_timeout
    # instead of one failing with "database is locked" on lock upgrade.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def database_backend(url: str) -> str:
    """`sqlite` or `postgresql`, the two databases supported; ValueError for any other URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")
    return backend


def create_db_engine(url: str, *, pool_size: int = 8, read_only: bool = False) -> Engine:
    """An engine for `sqlite:///path` (embedded default) or `postgresql+psycopg://...`.

    `read_only` engines run each statement in its own implicit transaction
    (SQLite autocommit, PostgreSQL AUTOCOMMIT): a one-statement read then
    costs one round trip, with no BEGIN/ROLLBACK around it.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            hide_parameters=True,  # error texts would quote message text and credentials
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False, "timeout": 10},
        )
        event.listen(engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            # Let SQLAlchemy, not pysqlite, decide when transactions begin.
            dbapi_conn.isolation_level = None

        if not read_only:
            event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql":
        # No pre-ping (a round trip per checkout): a connection that died
        # with the server is invalidated on first use and the call answers
        # UNAVAILABLE, which clients retry.
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if read_only else {}
        return create_engine(
            url, hide_parameters=True, pool_size=pool_size, max_overflow=pool_size, pool_recycle=1800, **options
        )
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")


class CommitsClosed(Exception):
    """The process is past its shutdown grace: this transaction was not committed (safe to retry)."""


class CommitGate:
    """Refuses every COMMIT once closed (a minimal gate; see Database.close_commits)."""

    def __init__(self) -> None:
        self.closed = False

    def check(self, _conn: Connection) -> None:
        if self.closed:
            raise CommitsClosed("the server is stopping; nothing commits any more")


@dataclass(frozen=True)
class Database:
    """One database through two engines: `writer` for transactions, `reader` for single-statement reads.

    `inline_writes` says whether write transactions may run on the event loop:
    true for SQLite, where one process is a single writer anyway and a
    transaction takes tens of microseconds; false for PostgreSQL, where a
    write may wait on a row lock held by another replica.
    """

    writer: Engine
    reader: Engine
    backend: str
    # Seals and opens the secrets stored here (channel credentials; see secrets.py).
    secrets: SecretBox = field(compare=False, repr=False)
    # Rung after each commit that wrote events (see doorbell.py).
    doorbell: Doorbell = field(default_factory=Doorbell, compare=False)
    _local: threading.local = field(default_factory=threading.local, compare=False, repr=False)
    _commit_gate: CommitGate = field(default_factory=CommitGate, compare=False, repr=False)

    @property
    def inline_writes(self) -> bool:
        return self.backend == "sqlite"

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A reader connection kept per thread (checkout and return cost half of a small read).

        It runs in autocommit, so keeping it holds no snapshot and no lock. A
        connection that failed is dropped and the next read opens a fresh one.
        """
        conn: Connection | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.invalidated:
            conn = self._local.conn = self.reader.connect()
        try:
            yield conn
        except BaseException:
            self._local.conn = None
            conn.close()
            raise
        conn.rollback()  # ends SQLAlchemy's bookkeeping transaction; nothing to undo in autocommit

    def close_commits(self) -> None:
        """From now on every COMMIT on the writer raises CommitsClosed and the transaction rolls back.

        Shutdown calls this at the end of its grace, before cancelling the calls
        still running, so a call cancelled then cannot commit afterwards.
        """
        self._commit_gate.closed = True

    def dispose(self) -> None:
        self.writer.dispose()
        self.reader.dispose()


def open_database(url: str, *, workers: int, secrets: SecretBox) -> Database:
    """Engines for `url`; the writer pool matches the worker threads, the reader serves the event loop."""
    db = Database(
        writer=create_db_engine(url, pool_size=workers),
        # Readers keep one connection per thread that reads (see read()): room for all of them.
        reader=create_db_engine(url, pool_size=workers + 2, read_only=True),
        backend=database_backend(url),
        secrets=secrets,
    )
    db.doorbell.attach(db.writer)
    event.listen(db.writer, "commit", db._commit_gate.check)
    return db


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe to run on every start)."""
    command.upgrade(alembic_config(engine), "head")


class WriteConflict(Exception):
    """A write lost a race it can win by running again (see retry_on_conflict)."""


def retry_on_conflict(fn: F) -> F:
    """Run a write once more if it lost a uniqueness race (request id, provider id, room key).

    The loser's transaction rolled back whole; on the second run its lookups
    find the winner's rows and return them, so concurrent duplicates get the
    first result instead of an error.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (IntegrityError, WriteConflict):
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class RowValues:
    """Attribute access over a dict of values just written (saves reading the row back on hot paths)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
