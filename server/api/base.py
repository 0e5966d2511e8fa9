"""What every handler group shares: the engine, settings and customer-scoped lookups."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, Table, select

from convhub.server.api.errors import NotFound
from convhub.server.config import Settings


class Handlers:
    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings


def get_live(conn: Connection, table: Table, resource: str, customer_id: str, item_id: str, **extra: str) -> Any:
    """The caller's live (not deleted) row, or NOT_FOUND; another customer's id is simply not found."""
    query = select(table).where(table.c.id == item_id, table.c.customer_id == customer_id, table.c.tm_delete.is_(None))
    for column, value in extra.items():
        query = query.where(table.c[column] == value)
    row = conn.execute(query).first()
    if row is None:
        raise NotFound(resource, item_id)
    return row
