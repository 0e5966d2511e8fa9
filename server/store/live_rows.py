"""A customer's live (not soft-deleted) rows by id: the lookup every Get/Update/Delete starts with.

Scoping by customer here keeps tenancy (DESIGN.md invariant 1) in one
place: another customer's id finds nothing, exactly like an unknown id.
Statements are built once per (table, extra columns) with bind parameters.
"""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Connection, Row, Select, Table, bindparam, select, update

from convhub.server.store.db import now_us


@functools.cache
def live_row_statement(table: Table, *extra: str) -> Select[Any]:
    """SELECT one live row by id and customer (plus `extra` columns), with bind parameters."""
    query = select(table).where(
        table.c.id == bindparam("id"), table.c.customer_id == bindparam("customer_id"), table.c.tm_delete.is_(None)
    )
    for column in extra:
        query = query.where(table.c[column] == bindparam(column))
    return query


def get_live(conn: Connection, table: Table, customer_id: str, item_id: str, **extra: str) -> Row[Any] | None:
    """The customer's live row with this id (and `extra` column values), or None."""
    return conn.execute(live_row_statement(table, *extra), {"id": item_id, "customer_id": customer_id, **extra}).first()


def soft_delete(
    conn: Connection,
    table: Table,
    customer_id: str,
    item_id: str,
    *,
    also_set: dict[str, Any] | None = None,
    **extra: str,
) -> Row[Any] | None:
    """Mark the customer's live row deleted; the row as it is now, or None if there was no live row."""
    if get_live(conn, table, customer_id, item_id, **extra) is None:
        return None
    now = now_us()
    conn.execute(update(table).where(table.c.id == item_id).values(tm_delete=now, tm_update=now, **(also_set or {})))
    return conn.execute(select(table).where(table.c.id == item_id)).one()
