"""Queries on conversations (rooms). Opening rooms is store/rooms.py's: it needs the unique index's verdict."""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, bindparam, exists, func, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement

from convhub.server.store.live_rows import LiveRows
from convhub.server.store.models import Conversation, table
from convhub.server.store.pages import Page, after_key, before_key, page_of
from convhub.server.store.rows import ConversationRow, plain_rows

conversations = table(Conversation)
live: LiveRows[ConversationRow] = LiveRows(conversations)
_by_ids = select(conversations).where(conversations.c.id.in_(bindparam("ids", expanding=True)))


class OpenRoomTaken(Exception):
    """An update would make a second open room for one (channel, self, peer) key (invariant 2)."""


def by_ids(conn: Connection, ids: Collection[str]) -> dict[str, ConversationRow]:
    return {r.id: cast("ConversationRow", r) for r in conn.execute(_by_ids, {"ids": list(ids)})}


def update_conversation(conn: Connection, conversation_id: str, values: dict[str, Any]) -> None:
    """Write `values`; OpenRoomTaken (and nothing written) if reopening collides with another open room."""
    try:
        with conn.begin_nested():
            conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(values))
    except IntegrityError:
        raise OpenRoomTaken(conversation_id) from None


@dataclass(frozen=True)
class ConversationFilter:
    """Which conversations a list returns; an empty/None field does not filter. Values are stored forms."""

    owner_id: str = ""
    tag: str = ""
    state: str | None = None
    type: str | None = None
    peer_type: str | None = None
    peer_target: str = ""
    updated_since_us: int | None = None
    account_id: str = ""

    def is_empty(self) -> bool:
        return self == ConversationFilter()

    def fingerprint(self) -> str:
        """A short digest of the filters: page tokens carry it, so a token only continues the list it came from."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def _has_tag(conn: Connection, tag: str) -> ColumnElement[bool]:
    """`tags` (a JSON array) holds `tag`: JSONB containment on PostgreSQL, json_each on SQLite."""
    if conn.dialect.name == "postgresql":
        return cast_(conversations.c.tags, JSONB).contains([tag])
    each = func.json_each(conversations.c.tags).table_valued("value")
    return exists(select(1).select_from(each).where(each.c.value == tag))


def page_filtered(
    conn: Connection, page: Page, customer_id: str, where: ConversationFilter
) -> tuple[list[ConversationRow], str]:
    """One page of live conversations matching `where`, in the (tm_create, id) order of every list."""
    if where.is_empty():
        return live.page(conn, page, customer_id)
    c = conversations.c
    conditions: list[ColumnElement[bool]] = [c.customer_id == customer_id, c.tm_delete.is_(None)]
    if where.owner_id:
        conditions.append(c.owner_id == where.owner_id)
    if where.tag:
        conditions.append(_has_tag(conn, where.tag))
    if where.state is not None:
        conditions.append(c.state == where.state)
    if where.type is not None:
        conditions.append(c.type == where.type)
    if where.peer_type is not None:
        conditions.append(c.peer_type == where.peer_type)
    if where.peer_target:
        conditions.append(c.peer_target == where.peer_target)
    if where.updated_since_us is not None:
        conditions.append(c.tm_update >= where.updated_since_us)
    if where.account_id:
        conditions.append(c.account_id == where.account_id)
    order: tuple[Any, Any] = (c.tm_create, c.id)
    if page.before is not None:
        conditions.append(before_key(conversations, page.before))
        order = (c.tm_create.desc(), c.id.desc())
    elif page.after is not None:
        conditions.append(after_key(conversations, page.after))
    query = select(conversations).where(*conditions).order_by(*order).limit(page.size + 1)
    rows, token = page_of(plain_rows(conversations, conn.execute(query).all()), page)
    return cast("list[ConversationRow]", rows), token
