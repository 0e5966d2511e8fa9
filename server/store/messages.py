"""Queries on messages, and the prebuilt statements the ingest batch writes with.

(customer_id, dedupe_scope, transaction_id) is unique (`uq_messages_provider_id`):
a provider retry can never store a second message (DESIGN.md invariant 3).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, cast

from sqlalchemy import Connection, bindparam, select, update

from convhub.server.store.bulk import BulkInsert
from convhub.server.store.keysets import KeyLookup
from convhub.server.store.live_rows import LiveRows
from convhub.server.store.models import Message, table
from convhub.server.store.rows import MessageRow, plain_rows

messages = table(Message)
live: LiveRows[MessageRow] = LiveRows(messages, parent="conversation_id")
INSERT_MESSAGE = BulkInsert(messages)
_by_ids = select(messages).where(messages.c.id.in_(bindparam("ids", expanding=True)))
_by_provider_id = KeyLookup(messages, ("customer_id", "dedupe_scope", "transaction_id"))


def by_provider_ids(conn: Connection, keys: Sequence[tuple[str, str, str]]) -> list[MessageRow]:
    """Messages already stored under (customer_id, dedupe_scope, transaction_id) keys, one statement."""
    return cast("list[MessageRow]", _by_provider_id.fetch(conn, keys))


def by_ids(conn: Connection, ids: Collection[str]) -> dict[str, MessageRow]:
    return {r.id: cast("MessageRow", r) for r in conn.execute(_by_ids, {"ids": list(ids)})}


_reply_token = (
    select(messages.c.reply_token)
    .where(
        messages.c.conversation_id == bindparam("conversation_id"),
        messages.c.direction == "incoming",
        messages.c.source_target == bindparam("peer_target"),
        messages.c.reply_token.is_not(None),
        messages.c.tm_create >= bindparam("since"),
        messages.c.tm_create <= bindparam("until"),
        messages.c.tm_delete.is_(None),
    )
    .order_by(messages.c.tm_create.desc(), messages.c.id.desc())
    .limit(1)
)


def reply_token(conn: Connection, conversation_id: str, peer_target: str, since_us: int, until_us: int) -> str | None:
    """The newest reply token `peer_target` gave us in the conversation between the two times (an index range:
    ix_messages_conversation_order), None without one. The provider decides whether it is still good."""
    value = conn.execute(
        _reply_token,
        {"conversation_id": conversation_id, "peer_target": peer_target, "since": since_us, "until": until_us},
    ).scalar()
    return str(value) if value else None


_locked = select(messages).where(messages.c.id == bindparam("id")).with_for_update()


def locked(conn: Connection, message_id: str) -> MessageRow | None:
    """The message, row-locked until commit on PostgreSQL (SQLite's writer lock already serialises writes)."""
    return cast("MessageRow | None", conn.execute(_locked, {"id": message_id}).first())


_locked_many = _by_ids.order_by(messages.c.id).with_for_update()


def locked_many(conn: Connection, ids: Collection[str]) -> dict[str, MessageRow]:
    """`locked` for several messages, one statement, locked in id order (two writers never wait crosswise)."""
    return {r.id: cast("MessageRow", r) for r in plain_rows(messages, conn.execute(_locked_many, {"ids": list(ids)}))}


def update_messages(conn: Connection, changes: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Several messages' updates that set the same columns, one executemany (one pipeline on PostgreSQL)."""
    if not changes:
        return
    columns = list(changes[0][1])
    statement = (
        update(messages)
        .where(messages.c.id == bindparam("b_id"))
        .values({column: bindparam(f"b_{column}") for column in columns})
    )
    conn.execute(
        statement,
        [{"b_id": message_id, **{f"b_{c}": values[c] for c in columns}} for message_id, values in changes],
    )


def update_message(conn: Connection, message_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(messages).where(messages.c.id == message_id).values(values))
