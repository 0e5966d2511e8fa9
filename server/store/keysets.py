"""Look up many rows by composite keys in one statement, on either database.

SQLite gets `(a = ? AND b = ?) OR (a = ? AND b = ?) ...`, which it runs as one
index search per key (a row-value `IN (VALUES ...)` is planned as a scan of the
whole index). PostgreSQL gets the keys as one array
per column through `unnest`, so the statement text is the same for any number
of keys: psycopg caches its parse (it does not for statements with over 50
parameters, which an expanding IN over a 32-item batch exceeds) and the server
prepares it once. Each key is looked up by a LATERAL subquery with LIMIT 1,
which PostgreSQL cannot flatten into a hash join over a sequential scan: it
stays one index probe per key however large the table grows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import ARRAY, Connection, Select, String, Table, and_, bindparam, cast, func, or_, select, true
from sqlalchemy.sql.elements import ColumnElement, TextClause


class UnnestRows:
    """Many rows as one parameter per column for a PostgreSQL statement: `unnest(CAST(:a AS text[]), ...) AS r(a, ...)`.

    The statement text is the same for any number of rows (psycopg and the
    server prepare it once), where a multi-row VALUES or one statement per
    row is rendered, parsed or planned again. `columns` are (name, SQL type).
    """

    def __init__(self, *columns: tuple[str, str], alias: str = "r") -> None:
        self.names = tuple(name for name, _ in columns)
        arrays = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in columns)
        self.sql = f"unnest({arrays}) AS {alias}({', '.join(self.names)})"

    def params(self, rows: Sequence[Mapping[str, Any]], *, last_per: Sequence[str] = ()) -> dict[str, list[Any]]:
        """One list per column, rows in order.

        `last_per`: keep only the last row of each value of these columns. An
        `UPDATE ... FROM` these rows applies, of several rows matching one
        target row, whichever it meets first; row by row the last would win.
        """
        if last_per:
            rows = list({tuple(row[name] for name in last_per): row for row in rows}.values())
        return {name: [row[name] for row in rows] for name in self.names}


def padded(keys: Sequence[tuple[Any, ...]]) -> Sequence[tuple[Any, ...]]:
    """`keys` with the last repeated up to a power of two (then a multiple of 64), for SQLite's OR statements.

    A statement per number of keys would compile (and fill SQLAlchemy's
    statement cache) for every batch size a group commit happens to form; a
    repeated OR term matches no further row, so padding changes no result.
    """
    count = len(keys)
    size = 1 << (count - 1).bit_length() if count <= 64 else -(-count // 64) * 64
    return keys if size == count else [*keys, *([keys[-1]] * (size - count))]


class KeyLookup:
    """SELECT the row of `table` whose unique `columns` equal each of many keys, plus fixed `where` conditions.

    At most one row per key (the columns must be unique among rows matching
    `where`). The PostgreSQL statement is built once; SQLite's once per padded number
    of keys (one OR term per key), kept for the batch sizes seen. `where` may use bind parameters
    passed to fetch().
    """

    def __init__(self, table: Table, columns: Sequence[str], *where: ColumnElement[bool] | TextClause) -> None:
        self.columns = tuple(columns)
        self._table = table
        self._where = where
        keys = (
            func.unnest(*(cast(bindparam(f"key_{c}"), ARRAY(String)) for c in self.columns))
            .table_valued(*self.columns)
            .render_derived(name="k", with_types=False)
        )
        one_per_key = (
            select(table).where(*(table.c[c] == keys.c[c] for c in self.columns), *where).limit(1).lateral("found")
        )
        self._postgresql = select(one_per_key).select_from(keys).join(one_per_key, true())

    def fetch(self, conn: Connection, keys: Sequence[tuple[Any, ...]], **params: Any) -> list[Any]:
        if not keys:
            return []
        if conn.dialect.name == "postgresql":
            per_column = zip(*keys, strict=True)
            arrays = {
                f"key_{c}": list(column_values) for c, column_values in zip(self.columns, per_column, strict=True)
            }
            return list(conn.execute(self._postgresql, {**arrays, **params}))
        keys = padded(keys)
        by_position = {f"key_{i}_{j}": value for i, key in enumerate(keys) for j, value in enumerate(key)}
        return list(conn.execute(self._sqlite_for(len(keys)), {**by_position, **params}))

    @functools.lru_cache(maxsize=128)  # noqa: B019 - lookups are module-level singletons
    def _sqlite_for(self, count: int) -> Select[Any]:
        cols = [self._table.c[c] for c in self.columns]
        any_key = or_(*(and_(*(col == bindparam(f"key_{i}_{j}") for j, col in enumerate(cols))) for i in range(count)))
        return select(self._table).where(any_key, *self._where)
