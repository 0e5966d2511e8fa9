"""Engine set-up for the two supported databases and schema upgrades on start."""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import ConnectionPoolEntry

F = TypeVar("F", bound=Callable[..., Any])

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def now_us() -> int:
    """Current time in integer microseconds (the storage format of every tm_* column)."""
    return time.time_ns() // 1000


def new_id() -> str:
    return str(uuid.uuid4())


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


def create_db_engine(url: str, *, pool_size: int = 8) -> Engine:
    """An engine for `sqlite:///path` (embedded default) or `postgresql+psycopg://...`."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            pool_size=pool_size,
            max_overflow=pool_size,
            connect_args={"check_same_thread": False, "timeout": 10},
        )
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        event.listen(engine, "connect", _sqlite_pragmas)

        @event.listens_for(engine, "connect")
        def _no_autobegin(dbapi_conn: Any, _record: ConnectionPoolEntry) -> None:
            dbapi_conn.isolation_level = None

        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    if parsed.get_backend_name() == "postgresql":
        return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}")


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade_schema(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent; safe to run on every start)."""
    command.upgrade(alembic_config(engine), "head")


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
        except IntegrityError:
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class RowValues:
    """Attribute access over a dict of values just written (saves reading the row back on hot paths)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)
