"""Engine set-up for the two supported databases and schema upgrades on start."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry

from convhub.server.store.breaker import DatabaseBreaker
from convhub.server.store.commit_gate import CommitGate
from convhub.server.store.doorbell import Doorbell
from convhub.server.store.faults import is_deadlock
from convhub.server.store.forked import run_forked
from convhub.server.store.schema_version import schema_is_current
from convhub.server.store.secrets import SecretBox
from convhub.server.store.sqlite_locks import begin_immediate_off_loop

if TYPE_CHECKING:
    from alembic.config import Config

# Imported where used, not here: psycopg (pg_connection) only for PostgreSQL URLs, alembic only
# when the schema is behind. A SQLite server that never loads them is ~20 MB smaller.

F = TypeVar("F", bound=Callable[..., Any])

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def now_us() -> int:
    """Current time in integer microseconds (the storage format of every tm_* column)."""
    return time.time_ns() // 1000


def new_id() -> str:
    """A time-ordered (version 7) UUID string: 48 bits of Unix milliseconds, then 74 random bits (RFC 9562).

    Ids made close in time sort close together, so each table's primary-key
    index grows at its right edge: a commit of N new rows dirties a few index
    pages instead of up to N scattered ones (random version 4 ids), and that
    is what SQLite writes to its WAL while it holds the one write lock, and
    PostgreSQL to its WAL and full-page images. Formatted by hand, at a third
    of the uuid module's cost (ids are hot).
    """
    h = f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"
    return f"{h[:8]}-{h[8:12]}-7{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


# RFC 9562 variant bits (10xx) for the first hex digit of the fourth group.
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}


@dataclass(frozen=True)
class DatabaseTimeouts:
    """How long the service waits on its database, in seconds (README: "When the database is slow or down")."""

    connect: float = 5.0  # opening a PostgreSQL connection (libpq connect_timeout, at least 2)
    read: float = 2.0  # one read; reads run on the event loop, so also the longest it stalls once per outage
    statement: float | None = 15.0  # one write statement (PostgreSQL statement_timeout); None: no limit
    lock: float = 10.0  # a write waiting for a lock (SQLite BEGIN IMMEDIATE, PostgreSQL lock_timeout)


def _sqlite_pragmas() -> Callable[[Any, ConnectionPoolEntry], None]:
    def on_connect(dbapi_conn: Any, record: ConnectionPoolEntry) -> None:
        # WAL lets readers run beside the writer; NORMAL sync is durable across
        # process crashes (only an OS crash can lose the last commits).
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_conn.isolation_level = None

    return on_connect


def database_backend(url: str) -> str:
    """`sqlite` or `postgresql`, the two databases supported; ValueError for any other URL."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")
    return backend


def create_db_engine(
    url: str,
    *,
    pool_size: int = 8,
    read_only: bool = False,
    timeouts: DatabaseTimeouts = DatabaseTimeouts(),
    breaker: DatabaseBreaker | None = None,
) -> Engine:
    """An engine for `sqlite:///path` (embedded default) or `postgresql+psycopg://...`.

    `read_only` engines run each statement in its own implicit transaction
    (SQLite autocommit, PostgreSQL AUTOCOMMIT): a one-statement read then
    costs one round trip, with no BEGIN/ROLLBACK around it. Every wait on the
    database is bounded by `timeouts`; on PostgreSQL a wait that runs out, or
    a failed connect, trips `breaker`, and no transaction begins while it is open.
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
            # The connection used last: its page cache is still current. FIFO handed out the one idle longest,
            # whose cache another connection's commits had made stale (BEGIN IMMEDIATE 130 -> 80 us of CPU).
            pool_use_lifo=True,
            # timeout 0: no busy handler. Readers in WAL mode never wait for writers, and writers wait at
            # BEGIN IMMEDIATE, polling more often than SQLite's handler would (sqlite_locks.py).
            connect_args={"check_same_thread": False, "timeout": 0},
        )
        event.listen(engine, "connect", _sqlite_pragmas())
        if not read_only:
            begin_immediate_off_loop(engine, lock_timeout=timeouts.lock)
        return engine
    if parsed.get_backend_name() == "postgresql":
        from convhub.server.store.pg_connection import ANSWER_SLACK, bound_connections
        from convhub.server.store.pg_connection import connect_args as pg_connect_args

        # No pre-ping (a round trip per checkout): a connection that died
        # with the server is invalidated on first use and the call answers
        # UNAVAILABLE, which clients retry.
        options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT"} if read_only else {}
        server_limit = timeouts.read if read_only else timeouts.statement
        engine = create_engine(
            url,
            hide_parameters=True,  # error texts would quote message text and credentials
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_recycle=1800,
            connect_args=pg_connect_args(
                connect_timeout=timeouts.connect,
                statement_timeout=server_limit,
                lock_timeout=timeouts.lock,
                user_options=_one(parsed.query.get("options")),
            ),
            **options,
        )
        answer_timeout = None if server_limit is None else server_limit + ANSWER_SLACK
        bound_connections(engine, answer_timeout=answer_timeout, breaker=breaker)
        if breaker is not None and not read_only:
            event.listen(engine, "begin", lambda _conn: breaker.check())
        return engine
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")


def _one(value: str | tuple[str, ...] | None) -> str | None:
    return " ".join(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class Database:
    """One database through two engines: `writer` for transactions, `reader` for single-statement reads.

    `inline_writes` says whether write transactions may start on the event
    loop: true for SQLite, where one process is a single writer anyway and a
    transaction takes tens of microseconds (and a taken lock sends the call to
    a thread, see sqlite_locks.py); false for PostgreSQL, where a write may
    wait on a row lock held by another replica.
    """

    writer: Engine
    reader: Engine
    backend: str
    # Seals and opens the secrets stored here (channel credentials; see secrets.py).
    secrets: SecretBox = field(compare=False, repr=False)
    # Open while the database does not answer (PostgreSQL; never trips on SQLite).
    breaker: DatabaseBreaker = field(default_factory=DatabaseBreaker, compare=False)
    # Checked just before every COMMIT on the writer (deadlines, shutdown).
    commit_gate: CommitGate = field(default_factory=CommitGate, compare=False)
    # Rung after each commit that wrote events (see doorbell.py).
    doorbell: Doorbell = field(default_factory=Doorbell, compare=False)
    _local: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @property
    def inline_writes(self) -> bool:
        return self.backend == "sqlite"

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """A reader connection kept per thread (checkout and return cost half of a small read).

        It runs in autocommit, so keeping it holds no snapshot and no lock. A
        connection that failed, or was opened before the breaker last tripped,
        is dropped and the next read opens a fresh one. While the breaker is
        open this raises DatabaseUnavailable without touching the database.
        """
        self.breaker.check()
        kept: tuple[Connection, int] | None = getattr(self._local, "kept", None)
        if kept is None or kept[1] != self.breaker.generation or kept[0].closed or kept[0].invalidated:
            if kept is not None and not kept[0].closed:
                kept[0].invalidate()  # it may be waiting on a dead socket: never reuse it
            self._local.kept = None
            kept = self._local.kept = (self.reader.connect(), self.breaker.generation)
        conn = kept[0]
        try:
            yield conn
        except BaseException:
            self._local.kept = None
            conn.close()
            raise
        conn.rollback()  # ends SQLAlchemy's bookkeeping transaction; nothing to undo in autocommit

    def close_commits(self) -> None:
        """From now on every COMMIT on the writer raises CommitsClosed (UNAVAILABLE) and the transaction rolls back.

        Shutdown calls this at the end of its grace, before cancelling the calls
        still running, so a call cancelled then cannot commit afterwards.
        """
        self.commit_gate.close()

    def dispose(self) -> None:
        self.breaker.stop()
        self.writer.dispose()
        self.reader.dispose()


def open_database(
    url: str,
    *,
    workers: int,
    secrets: SecretBox,
    timeouts: DatabaseTimeouts = DatabaseTimeouts(),
) -> Database:
    """Engines for `url`; the writer pool matches the worker threads, the reader serves the event loop."""
    engines: list[Engine] = []

    def probe() -> None:  # only PostgreSQL's breaker ever trips, so psycopg is loaded by then
        from convhub.server.store.pg_connection import ANSWER_SLACK, probe_database

        probe_database(url, connect_timeout=timeouts.connect, answer_timeout=timeouts.read + ANSWER_SLACK)

    def recover() -> None:
        for engine in engines:  # their pooled connections may be dead: start afresh
            engine.dispose()

    breaker = DatabaseBreaker(probe, recover)
    engines += [
        create_db_engine(url, pool_size=workers, timeouts=timeouts, breaker=breaker),
        # Readers keep one connection per thread that reads (see read()): room for all of them.
        create_db_engine(url, pool_size=workers + 2, read_only=True, timeouts=timeouts, breaker=breaker),
    ]
    db = Database(writer=engines[0], reader=engines[1], backend=database_backend(url), secrets=secrets, breaker=breaker)
    db.doorbell.attach(db.writer)
    db.commit_gate.attach(db.writer)
    return db


def alembic_config(engine: Engine) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe to run on every start)."""
    from alembic import command

    command.upgrade(alembic_config(engine), "head")


def migrate(url: str, timeouts: DatabaseTimeouts, *, forked: bool = False) -> None:
    """upgrade_schema over a connection without a statement limit: a migration may rewrite a big table.

    Lock waits stay bounded, so a migration queued behind a busy replica fails
    instead of holding every later query of the table in the lock queue.
    `forked`: a schema that is behind is upgraded in a forked child (store/forked.py), so a server that
    started on a fresh database does not keep alembic resident; call it only before any thread exists.
    """
    engine = _migration_engine(url, timeouts)
    try:
        if schema_is_current(engine):  # the usual start: one SELECT, and alembic is never imported
            return
    finally:
        engine.dispose()
    upgrade = functools.partial(_upgrade, url, timeouts)
    if forked:
        run_forked(upgrade)
    else:
        upgrade()


def _migration_engine(url: str, timeouts: DatabaseTimeouts) -> Engine:
    return create_db_engine(url, pool_size=1, timeouts=dataclasses.replace(timeouts, statement=None))


def _upgrade(url: str, timeouts: DatabaseTimeouts) -> None:
    engine = _migration_engine(url, timeouts)  # its own: a forked child must not use the parent's connections
    try:
        upgrade_schema(engine)
    finally:
        engine.dispose()


class WriteConflict(Exception):
    """A write lost a race it can win by running again (see retry_on_conflict)."""


def retry_on_conflict(fn: F) -> F:
    """Run a write once more if it lost a uniqueness race (request id, provider id, room key) or a deadlock.

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
        except DBAPIError as exc:
            if not is_deadlock(exc):
                raise
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class RowValues:
    """Attribute access over a dict of values just written (saves reading the row back on hot paths)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
