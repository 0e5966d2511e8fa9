"""Queries on channel accounts (the `accounts` table); rows carry credentials, which no reader converts."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection, bindparam, insert, select, update

from convhub.server.store import live_rows
from convhub.server.store.models import Account
from convhub.server.store.pages import Lister, Page
from convhub.server.store.rows import AccountRow

accounts = Account.__table__
_insert = insert(accounts)
_by_id = select(accounts).where(accounts.c.id == bindparam("id"))
_lister = Lister(accounts)


def get_live(conn: Connection, customer_id: str, account_id: str) -> AccountRow | None:
    return cast("AccountRow | None", live_rows.get_live(conn, accounts, customer_id, account_id))


def by_id(conn: Connection, account_id: str) -> AccountRow:
    """A row known to exist (just written, or named by an idempotency key)."""
    return cast("AccountRow", conn.execute(_by_id, {"id": account_id}).one())


def insert_account(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_insert, values)


def update_account(conn: Connection, account_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(values))


def soft_delete(conn: Connection, customer_id: str, account_id: str) -> AccountRow | None:
    return cast("AccountRow | None", live_rows.soft_delete(conn, accounts, customer_id, account_id))


def list_page(conn: Connection, page: Page, customer_id: str) -> tuple[list[AccountRow], str]:
    rows, token = _lister.fetch(conn, page, customer_id)
    return cast("list[AccountRow]", rows), token
