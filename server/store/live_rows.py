"""A customer's live (not soft-deleted) rows of one table: get by id, soft-delete, list a page.

Scoping by customer here keeps tenancy (DESIGN.md invariant 1) in one
place: another customer's id finds nothing, exactly like an unknown id.
Statements are built once with bind parameters. Rows come back as plain tuples
(store/rows.py: far cheaper to read than SQLAlchemy rows), typed as the
table's row protocol.
"""

from __future__ import annotations

import functools
from typing import Any, Generic, TypeVar, cast

from sqlalchemy import Connection, Select, Table, bindparam, select, update

from convhub.server.store.db import now_us
from convhub.server.store.pages import Lister, Page
from convhub.server.store.rows import plain_row

R = TypeVar("R")


@functools.cache
def live_row_statement(table: Table, *extra: str) -> Select[Any]:
    """SELECT one live row by id and customer (plus `extra` columns), with bind parameters."""
    query = select(table).where(
        table.c.id == bindparam("id"), table.c.customer_id == bindparam("customer_id"), table.c.tm_delete.is_(None)
    )
    for column in extra:
        query = query.where(table.c[column] == bindparam(column))
    return query


class LiveRows(Generic[R]):
    """The live rows of `table`, each under a customer and, when `parent` names a column, under that parent too.

    `parent` (e.g. `conversation_id`) is matched on every lookup, so a message
    id asked for under the wrong conversation is not found.
    """

    def __init__(self, table: Table, parent: str | None = None) -> None:
        self.table = table
        self._parent = (parent,) if parent else ()
        self._get = live_row_statement(table, *self._parent)
        self._by_id = select(table).where(table.c.id == bindparam("id"))
        self._lister = Lister(table, self._parent)

    def _scope(self, parent_id: str | None) -> dict[str, str]:
        return {self._parent[0]: parent_id} if self._parent and parent_id is not None else {}

    def get(self, conn: Connection, customer_id: str, item_id: str, parent_id: str | None = None) -> R | None:
        params = {"id": item_id, "customer_id": customer_id, **self._scope(parent_id)}
        return cast("R | None", plain_row(self.table, conn.execute(self._get, params).first()))

    def by_id(self, conn: Connection, item_id: str) -> R:
        """A row known to exist (just written, or named by an idempotency key), deleted or not."""
        return cast("R", plain_row(self.table, conn.execute(self._by_id, {"id": item_id}).one()))

    def soft_delete(
        self,
        conn: Connection,
        customer_id: str,
        item_id: str,
        parent_id: str | None = None,
        *,
        also_set: dict[str, Any] | None = None,
    ) -> R | None:
        """Mark the row deleted (and set `also_set`); the row as it is now, or None if there was no live row."""
        if self.get(conn, customer_id, item_id, parent_id) is None:
            return None
        now = now_us()
        table = self.table
        conn.execute(
            update(table).where(table.c.id == item_id).values(tm_delete=now, tm_update=now, **(also_set or {}))
        )
        return self.by_id(conn, item_id)

    def page(self, conn: Connection, page: Page, customer_id: str, parent_id: str | None = None) -> tuple[list[R], str]:
        """One page in (tm_create, id) order and the next page token ('' on the last page)."""
        rows, token = self._lister.fetch(conn, page, customer_id, **self._scope(parent_id))
        return cast("list[R]", rows), token
