"""Rows queued during a batched transaction and written with one executemany per statement.

Inside one group-committed transaction (see group_commit.py) each item's
child rows (messages, participants, idempotency keys, activity updates) are
collected here and written at the end: one executemany (or, for plain inserts
on PostgreSQL, one COPY: bulk.py) per statement costs a fraction of one execute
per row. Statements are flushed in the order given at
construction, so parent rows always precede the rows that refer to them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.expression import Executable

from convhub.server.store.bulk import BulkInsert

# A statement to executemany, a BulkInsert, or a function writing all the rows itself (conn, rows).
RowsWriter = BulkInsert | Executable | Callable[[Connection, list[dict[str, Any]]], None]


class DeferredWrites:
    def __init__(self, order: Sequence[RowsWriter]) -> None:
        self._rows: dict[RowsWriter, list[dict[str, Any]]] = {statement: [] for statement in order}

    def add(self, statement: RowsWriter, row: dict[str, Any]) -> None:
        self._rows[statement].append(row)

    def flush(self, conn: Connection) -> None:
        for statement, rows in self._rows.items():
            if not rows:
                continue
            if isinstance(statement, Executable):
                conn.execute(statement, rows)
            else:
                statement(conn, rows)  # a BulkInsert (COPY on PostgreSQL), or a writer of its own
            rows.clear()
