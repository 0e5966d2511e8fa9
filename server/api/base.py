"""What every handler group shares: the database, settings and customer-scoped lookups.

Hot-path statements are built once (with bind parameters) and reused: building
a SQLAlchemy statement and its cache key per call costs more than running it.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, Engine, Select, Table, bindparam, select, update

from convhub.server.api.errors import NotFound
from convhub.server.config import Settings
from convhub.server.store.db import Database, now_us


class Handlers:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    @property
    def engine(self) -> Engine:
        """For transactions (writes)."""
        return self.db.writer


@functools.cache
def live_row_statement(table: Table, *extra: str) -> Select[Any]:
    """SELECT one live row by id and customer (plus `extra` columns), with bind parameters."""
    query = select(table).where(
        table.c.id == bindparam("id"), table.c.customer_id == bindparam("customer_id"), table.c.tm_delete.is_(None)
    )
    for column in extra:
        query = query.where(table.c[column] == bindparam(column))
    return query


def soft_delete(
    conn: Connection,
    table: Table,
    resource: str,
    customer_id: str,
    item_id: str,
    *,
    also_set: dict[str, Any] | None = None,
    **extra: str,
) -> Any:
    """Mark the caller's live row deleted (NOT_FOUND if there is none); returns the row as it is now."""
    get_live(conn, table, resource, customer_id, item_id, **extra)
    now = now_us()
    conn.execute(update(table).where(table.c.id == item_id).values(tm_delete=now, tm_update=now, **(also_set or {})))
    return conn.execute(select(table).where(table.c.id == item_id)).one()


def get_live(conn: Connection, table: Table, resource: str, customer_id: str, item_id: str, **extra: str) -> Any:
    """The caller's live (not deleted) row, or NOT_FOUND; another customer's id is simply not found."""
    statement = live_row_statement(table, *extra)
    row = conn.execute(statement, {"id": item_id, "customer_id": customer_id, **extra}).first()
    if row is None:
        raise NotFound(resource, item_id)
    return row
