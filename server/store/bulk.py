"""Many new rows into one table: binary COPY on PostgreSQL, the driver's executemany on SQLite.

The hot transactions (ingest, sends, webhook fan-out) insert dozens of rows
per commit: four events per inbound message, its message, contact and
participant. As INSERT executemany, psycopg pipelines one Bind/Execute per
row and PostgreSQL plans and runs each; COPY streams the rows as one
statement. Measured for one transaction of 44 event rows: client CPU
0.70 -> 0.21 ms, PostgreSQL's 0.69 -> 0.49 ms, wall 1.09 -> 0.86 ms. COPY has
no ON CONFLICT or RETURNING: it serves plain inserts only, and a unique
violation aborts the transaction exactly as an INSERT's would
(retry_on_conflict sees the same IntegrityError). On SQLite the rows go to
sqlite3's executemany as tuples, without SQLAlchemy's per-row parameter
processing: 24-25 -> 22 us per event row, commit included, inside the
transaction that holds SQLite's one write lock.
"""

from __future__ import annotations

import contextlib
import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.schema import ColumnDefault

from convhub.server.observability.tracing import statement_span

# Fewer rows than this go as an INSERT: COPY's extra round trip (CopyInResponse) outweighs its saving on one.
COPY_MIN_ROWS = 2

_PLACEHOLDER = {"sqlite": "?", "postgresql": "%s"}  # the drivers' positional paramstyles (qmark, format)

# PostgreSQL type (as SQLAlchemy compiles a column's type) -> the name psycopg dumps binary COPY fields as.
# In binary COPY every field goes to its column's own receive function: the dumper must match it exactly.
_COPY_TYPES = {
    "VARCHAR": "text",
    "TEXT": "text",
    "BIGINT": "int8",
    "INTEGER": "int4",
    "SMALLINT": "int2",
    "BOOLEAN": "bool",
    "BYTEA": "bytea",
    "JSON": "json",
    "JSONB": "jsonb",
    "DOUBLE PRECISION": "float8",
    "FLOAT": "float8",
    "REAL": "float4",
}


@dataclass(frozen=True)
class _WritePlan:
    """How rows with one set of columns are written: the driver's INSERT (for executemany), on PostgreSQL
    also the COPY and its field types, and per-column value processing."""

    insert: str
    copy: str  # "" where there is no COPY (SQLite)
    columns: tuple[str, ...]
    types: list[str]
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's values in `columns` order (C itemgetter)
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # (index, bind processor) of the columns that have one
    defaults: tuple[tuple[str, ColumnDefault], ...]  # columns the rows leave out that have a Python default


class BulkInsert:
    """A plain INSERT of many rows into `table` (no ON CONFLICT, no RETURNING).

    Rows are mappings with the same keys, as for `conn.execute(insert(table), rows)`;
    columns they leave out get the column's Python default (or the server's).
    """

    def __init__(self, table: Table) -> None:
        self.table = table
        self._insert = insert(table)
        self._plans: dict[tuple[str, tuple[str, ...]], _WritePlan] = {}  # by dialect and columns

    def __repr__(self) -> str:
        return f"BulkInsert({self.table.name})"

    def __call__(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        plan = self._plan(tuple(rows[0]), conn.dialect)
        if plan.copy and len(rows) < COPY_MIN_ROWS:
            # As SQLAlchemy's INSERT: psycopg, without COPY's field types, would send a JSON list as an array.
            conn.execute(self._insert, list(rows))
            return
        filled = [{**row, **{n: _value_of(d) for n, d in plan.defaults}} for row in rows] if plan.defaults else rows
        # One C itemgetter call per row, then only the columns with a bind processor (a JSON column, say)
        # touched: a generator over every column of every row took twice as long (10 message rows).
        values: list[Any] = list(map(plan.values, filled))
        if plan.processed:
            values = [_processed(row, plan.processed) for row in values]
        _write(conn, plan, values)

    def tuples(self, conn: Connection, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Rows given as tuples in `columns` order, values already in the driver's form (no processing).

        `columns` must name every column that has a Python default: nothing is added to a tuple.
        """
        if not rows:
            return
        plan = self._plan(tuple(columns), conn.dialect)
        if plan.defaults:
            raise TypeError(f"{self.table.name}: tuples leave out {', '.join(n for n, _ in plan.defaults)}")
        _write(conn, plan, rows)

    def _plan(self, keys: tuple[str, ...], dialect: Dialect) -> _WritePlan:
        plan = self._plans.get((dialect.name, keys))
        if plan is None:
            plan = self._plans[(dialect.name, keys)] = self._make_plan(keys, dialect)
        return plan

    def _make_plan(self, keys: tuple[str, ...], dialect: Dialect) -> _WritePlan:
        defaults: list[tuple[str, ColumnDefault]] = []
        for column in self.table.columns:
            default = column.default
            if column.name in keys or default is None:
                continue
            if not isinstance(default, ColumnDefault) or not (default.is_scalar or default.is_callable):
                raise TypeError(f"{self.table.name}.{column.name}: a SQL default cannot be used with COPY")
            defaults.append((column.name, default))
        columns = keys + tuple(name for name, _ in defaults)
        types, processed = [], []
        for index, name in enumerate(columns):
            column_type = self.table.columns[name].type
            processor = column_type.bind_processor(dialect)
            if processor is not None:
                processed.append((index, processor))
            if dialect.name != "postgresql":
                continue
            compiled = column_type.compile(dialect=dialect).split("(")[0].strip()
            if compiled not in _COPY_TYPES:
                raise TypeError(f"{self.table.name}.{name}: no COPY type for {compiled}")
            types.append(_COPY_TYPES[compiled])
        names = ", ".join(columns)
        marks = ", ".join([_PLACEHOLDER[dialect.name]] * len(columns))
        insert = f"INSERT INTO {self.table.name} ({names}) VALUES ({marks})"
        copy = f"COPY {self.table.name} ({names}) FROM STDIN (FORMAT BINARY)" if dialect.name == "postgresql" else ""
        getter = operator.itemgetter(*columns)
        values = getter if len(columns) > 1 else lambda row: (getter(row),)
        return _WritePlan(insert, copy, columns, types, values, tuple(processed), tuple(defaults))


def _write(conn: Connection, plan: _WritePlan, values: Sequence[Sequence[Any]]) -> None:
    """COPY where there is one and the rows are enough; else the driver's executemany."""
    if plan.copy and len(values) >= COPY_MIN_ROWS:
        copy_rows(conn, plan.copy, plan.types, values)
    else:  # without SQLAlchemy's per-row parameter processing: the plan did that
        conn.exec_driver_sql(plan.insert, values)


def _processed(row: tuple[Any, ...], processed: tuple[tuple[int, Callable[[Any], Any]], ...]) -> tuple[Any, ...]:
    values = list(row)
    for index, process in processed:
        values[index] = process(values[index])
    return tuple(values)  # SQLAlchemy's exec_driver_sql takes a list of tuples (or of dicts) only


def _value_of(default: ColumnDefault) -> Any:
    """A Python-side column default's value (SQLAlchemy wraps a callable one to take an execution context)."""
    return default.arg(None) if default.is_callable else default.arg


def copy_rows(conn: Connection, statement: str, types: list[str], rows: Sequence[Sequence[Any]]) -> None:
    """Run a binary `COPY ... FROM STDIN` of `rows` on `conn`'s PostgreSQL connection, inside its transaction.

    psycopg's errors come back as SQLAlchemy's, as from `conn.execute`: an
    IntegrityError for a unique violation, a DBAPIError with
    `connection_invalidated` when the connection is gone (store/faults.py).
    """
    import psycopg

    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with (
        statement_span(conn, statement),
        _as_sqlalchemy_errors(conn, statement, cursor, psycopg.Error),
        cursor.copy(statement) as copy,
    ):
        copy.set_types(types)
        for row in rows:
            copy.write_row(row)


@contextlib.contextmanager
def _as_sqlalchemy_errors(conn: Connection, statement: str, cursor: Any, base: type[Exception]) -> Iterator[None]:
    try:
        yield
    except base as exc:
        disconnected = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)  # type: ignore[arg-type]
        if disconnected:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            statement, None, exc, base, connection_invalidated=disconnected, dialect=conn.dialect
        ) from exc
