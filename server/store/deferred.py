"""Rows queued during a batched transaction and written with one executemany per statement.

Inside one group-committed transaction (see group_commit.py) each item's
child rows (messages, participants, idempotency keys, activity updates) are
collected here and written at the end: one executemany (or, for plain inserts
on PostgreSQL, one COPY: bulk.py) per statement costs a fraction of one execute
per row. Statements are flushed in the order given at
construction, so parent rows always precede the rows that refer to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.sql.expression import Executable

from convhub.server.store.bulk import BulkInsert


class DeferredWrites:
    def __init__(self, order: Sequence[BulkInsert | Executable]) -> None:
        self._rows: dict[BulkInsert | Executable, list[dict[str, Any]]] = {statement: [] for statement in order}

    def add(self, statement: BulkInsert | Executable, row: dict[str, Any]) -> None:
        self._rows[statement].append(row)

    def flush(self, conn: Connection) -> None:
        for statement, rows in self._rows.items():
            if not rows:
                continue
            if isinstance(statement, BulkInsert):
                statement(conn, rows)  # COPY on PostgreSQL
            else:
                conn.execute(statement, rows)
            rows.clear()
