"""Queries on channel accounts (the `accounts` table); rows carry sealed credentials, which no reader converts."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from sqlalchemy import Connection, bindparam, insert, select, update

from convhub.server.store.live_rows import LiveRows
from convhub.server.store.models import Account, table
from convhub.server.store.rows import AccountRow

accounts = table(Account)
live: LiveRows[AccountRow] = LiveRows(accounts)
_insert = insert(accounts)
_live_by_id = select(accounts).where(accounts.c.id == bindparam("id"), accounts.c.tm_delete.is_(None))
_of_customer = (
    select(accounts)
    .where(accounts.c.customer_id == bindparam("customer_id"), accounts.c.tm_delete.is_(None))
    .order_by(accounts.c.tm_create, accounts.c.id)
)
_with_timeout = select(accounts).where(accounts.c.inactivity_timeout_s > 0, accounts.c.tm_delete.is_(None))


def insert_account(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_insert, values)


def update_account(conn: Connection, account_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(values))


def live_by_id(conn: Connection, account_id: str) -> AccountRow | None:
    """Any customer's live account (provider hooks know the account, not the tenant)."""
    return cast("AccountRow | None", conn.execute(_live_by_id, {"id": account_id}).first())


def live_by_widget_key(conn: Connection, widget_key: str) -> AccountRow | None:
    """The live web chat account a page's public widget key names (uq_accounts_widget_key)."""
    query = select(accounts).where(accounts.c.widget_key == widget_key, accounts.c.tm_delete.is_(None))
    return cast("AccountRow | None", conn.execute(query).first())


def by_ids(conn: Connection, ids: Collection[str]) -> list[AccountRow]:
    """Accounts by id, deleted or not (the caller decides what a deleted one means)."""
    return cast("list[AccountRow]", conn.execute(select(accounts).where(accounts.c.id.in_(list(ids)))).all())


def of_customer(conn: Connection, customer_id: str) -> list[AccountRow]:
    """The customer's live accounts, oldest first (channel choice prefers the oldest)."""
    return cast("list[AccountRow]", conn.execute(_of_customer, {"customer_id": customer_id}).all())


def with_inactivity_timeout(conn: Connection) -> list[AccountRow]:
    return cast("list[AccountRow]", conn.execute(_with_timeout).all())
