"""Queries on channel accounts (the `accounts` table); rows carry sealed credentials, which no reader converts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, update

from convhub.server.store.live_rows import LiveRows
from convhub.server.store.models import Account
from convhub.server.store.rows import AccountRow

accounts = Account.__table__
live: LiveRows[AccountRow] = LiveRows(accounts)
_insert = insert(accounts)


def insert_account(conn: Connection, values: dict[str, Any]) -> None:
    conn.execute(_insert, values)


def update_account(conn: Connection, account_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(accounts).where(accounts.c.id == account_id).values(values))
