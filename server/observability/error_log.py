"""Log an unexpected error without the request's data (DESIGN.md invariant 5: secrets never reach a log).

An exception's text can quote what the caller sent: SQLAlchemy appends the
bound parameters (our engines hide them, see `store/db.py`), PostgreSQL's
DETAIL repeats the failing row (`Failing row contains (..., {"api_key": ...})`)
and a ValueError may quote its input. So the log line carries what locates
the bug and nothing that came from the request: each exception's type, a
database error's SQLSTATE, constraint and statement (whose values are bind
parameters), and the stack (file, line, function, source line). Never the
exception messages themselves.
"""

from __future__ import annotations

import logging
import traceback

from sqlalchemy.exc import DBAPIError, StatementError

MAX_STATEMENT_CHARS = 300


def describe_exception(exc: BaseException) -> str:
    """A traceback-shaped text of `exc` and its causes, with every message left out."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts = []
    for link in reversed(chain):  # innermost first, as Python prints a chain
        stack = "".join(traceback.format_list(traceback.extract_tb(link.__traceback__)))
        parts.append(f"Traceback (most recent call last):\n{stack}{_summary(link)}")
    return "\nThe above exception led to:\n\n".join(parts)


def _summary(exc: BaseException) -> str:
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    if not isinstance(exc, StatementError):
        return name
    facts = []
    orig = exc.orig if isinstance(exc, DBAPIError) else None
    if orig is not None:
        facts.append(f"driver error {type(orig).__module__}.{type(orig).__qualname__}")
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None)
        if sqlstate:
            facts.append(f"code {sqlstate}")
        diag = getattr(orig, "diag", None)
        for label in ("table_name", "constraint_name"):
            value = getattr(diag, label, None) if diag is not None else None
            if value:
                facts.append(f"{label.removesuffix('_name')} {value}")
    if exc.statement:
        facts.append(f"statement: {' '.join(exc.statement.split())[:MAX_STATEMENT_CHARS]}")
    return f"{name} ({'; '.join(facts)})"


def log_unexpected(logger: logging.Logger, where: str, exc: BaseException) -> None:
    """One ERROR record for an exception no handler expected, safe to ship to any log store."""
    logger.error("unexpected error in %s\n%s", where, describe_exception(exc))
