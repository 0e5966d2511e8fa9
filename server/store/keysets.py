"""Look up many rows by composite keys in one statement, on either database.

SQLite gets `(a, b, c) IN (VALUES ...)`. PostgreSQL gets the keys as one array
per column joined through `unnest`, so the statement text is the same for any
number of keys: psycopg caches its parse (it does not for statements with
over 50 parameters, which an expanding IN over a 32-item batch exceeds) and
the server prepares it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ARRAY, Connection, String, Table, and_, bindparam, cast, func, select, tuple_
from sqlalchemy.sql.elements import ColumnElement


class KeyLookup:
    """SELECT the rows of `table` whose `columns` equal one of many keys, plus fixed `where` conditions.

    Both statements are built once; `where` may use bind parameters passed to fetch().
    """

    def __init__(self, table: Table, columns: Sequence[str], *where: ColumnElement[bool]) -> None:
        self.columns = tuple(columns)
        self._sqlite = select(table).where(
            tuple_(*(table.c[c] for c in self.columns)).in_(bindparam("keys", expanding=True)), *where
        )
        keys = (
            func.unnest(*(cast(bindparam(f"key_{c}"), ARRAY(String)) for c in self.columns))
            .table_valued(*self.columns)
            .render_derived(name="k", with_types=False)
        )
        self._postgresql = (
            select(table).join(keys, and_(*(table.c[c] == keys.c[c] for c in self.columns))).where(*where)
        )

    def fetch(self, conn: Connection, keys: Sequence[tuple[Any, ...]], **params: Any) -> list[Any]:
        if not keys:
            return []
        if conn.dialect.name == "postgresql":
            per_column = zip(*keys, strict=True)
            arrays = {f"key_{c}": list(values) for c, values in zip(self.columns, per_column, strict=True)}
            return list(conn.execute(self._postgresql, {**arrays, **params}))
        return list(conn.execute(self._sqlite, {"keys": list(keys), **params}))
