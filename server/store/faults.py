"""What the store raises when the database, not the request, stopped a call.

A `DatabaseFault` means nothing was committed and the same call may succeed
later: transports answer UNAVAILABLE (retryable) with the fault's `reason`.
`classify` turns a driver error into a fault, or into None when the error is
a bug (answered INTERNAL and logged).
"""

from __future__ import annotations

import sqlite3
import sys

from sqlalchemy.exc import DBAPIError


class DatabaseFault(Exception):
    """The database could not do the work in time, or the process stopped accepting it; retry later."""

    reason = "DATABASE_UNAVAILABLE"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DatabaseUnavailable(DatabaseFault):
    """The database does not answer, refuses connections, or dropped the connection."""


class DatabaseBusy(DatabaseFault):
    """The database answered, but the write waited too long for a lock (or its statement ran out of time)."""

    reason = "DATABASE_BUSY"


class CommitsClosed(DatabaseFault):
    """The process is shutting down and commits no more (see CommitGate.close)."""

    reason = "SHUTTING_DOWN"


class DeadlinePassed(Exception):
    """The caller's deadline passed before COMMIT, so nothing was committed: the caller already gave up."""


class WriteWouldWait(Exception):
    """On the event loop, a write found the write lock taken: run it again on a thread, where it may wait."""


# lock_not_available (lock_timeout), query_canceled (statement_timeout), deadlock_detected
_PG_BUSY = frozenset({"55P03", "57014", "40P01"})
# connection exception, operator intervention (shutdown, restart), insufficient resources (too many connections)
_PG_UNAVAILABLE_CLASSES = ("08", "57P", "53")
_SQLITE_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def is_sqlite_busy(exc: BaseException) -> bool:
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    code = getattr(orig, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _SQLITE_BUSY


def is_deadlock(exc: BaseException) -> bool:
    """PostgreSQL aborted this transaction to break a lock cycle with another one: running it again is the remedy.

    Two replicas ingesting the same new people can meet crosswise (one holds
    an address claim and waits for a room, the other the reverse).
    """
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == "40P01"


def classify(exc: BaseException) -> DatabaseFault | DeadlinePassed | None:
    """The fault `exc` amounts to, or None when it is not the database's doing."""
    if isinstance(exc, DatabaseFault | DeadlinePassed):
        return exc
    if not isinstance(exc, DBAPIError):
        return None
    if exc.connection_invalidated:
        return DatabaseUnavailable("the database connection was lost")
    if is_sqlite_busy(exc):
        return DatabaseBusy("the database stayed locked by another writer")
    sqlstate = getattr(exc.orig, "sqlstate", None)
    if sqlstate in _PG_BUSY:
        return DatabaseBusy("the write waited too long for a lock")
    if (sqlstate and sqlstate.startswith(_PG_UNAVAILABLE_CLASSES)) or (
        sqlstate is None and _is_psycopg_operational(exc.orig)  # failed to connect
    ):
        return DatabaseUnavailable("the database is not reachable")
    return None


def _is_psycopg_operational(orig: BaseException | None) -> bool:
    """psycopg's OperationalError, without importing psycopg: a process that never loaded it (SQLite) has none."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(orig, psycopg.OperationalError)
