"""Queries on conversations (rooms). Opening rooms is store/rooms.py's: it needs the unique index's verdict."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, cast

from sqlalchemy import Connection, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from convhub.server.store.live_rows import LiveRows
from convhub.server.store.models import Conversation
from convhub.server.store.rows import ConversationRow

conversations = Conversation.__table__
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
