"""Queries on messages, and the prebuilt statements the ingest batch writes with.

(customer_id, dedupe_scope, transaction_id) is unique (`uq_messages_provider_id`):
a provider retry can never store a second message (DESIGN.md invariant 3).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import cast

from sqlalchemy import Connection, bindparam, insert, select

from convhub.server.store import live_rows
from convhub.server.store.keysets import KeyLookup
from convhub.server.store.models import Message
from convhub.server.store.pages import Lister, Page
from convhub.server.store.rows import MessageRow

messages = Message.__table__
INSERT_MESSAGE = insert(messages)
_by_ids = select(messages).where(messages.c.id.in_(bindparam("ids", expanding=True)))
_by_provider_id = KeyLookup(messages, ("customer_id", "dedupe_scope", "transaction_id"))
_lister = Lister(messages, ["conversation_id"])


def by_provider_ids(conn: Connection, keys: Sequence[tuple[str, str, str]]) -> list[MessageRow]:
    """Messages already stored under (customer_id, dedupe_scope, transaction_id) keys, one statement."""
    return cast("list[MessageRow]", _by_provider_id.fetch(conn, keys))


def by_ids(conn: Connection, ids: Collection[str]) -> dict[str, MessageRow]:
    return {r.id: cast("MessageRow", r) for r in conn.execute(_by_ids, {"ids": list(ids)})}


def get_live(conn: Connection, customer_id: str, conversation_id: str, message_id: str) -> MessageRow | None:
    row = live_rows.get_live(conn, messages, customer_id, message_id, conversation_id=conversation_id)
    return cast("MessageRow | None", row)


def soft_delete(conn: Connection, customer_id: str, conversation_id: str, message_id: str) -> MessageRow | None:
    row = live_rows.soft_delete(conn, messages, customer_id, message_id, conversation_id=conversation_id)
    return cast("MessageRow | None", row)


def list_page(conn: Connection, page: Page, customer_id: str, conversation_id: str) -> tuple[list[MessageRow], str]:
    rows, token = _lister.fetch(conn, page, customer_id, conversation_id=conversation_id)
    return cast("list[MessageRow]", rows), token
