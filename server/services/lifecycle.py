"""Conversation lifecycle: close, reopen, and the inactivity sweep.

A closed conversation keeps its history and no longer holds its (channel,
self, peer) key, so the peer's next inbound message opens a new one
(DESIGN.md invariant 2). Reopening takes the key back, which the partial
unique index refuses while another open room holds it.

The sweep closes, for each account with an inactivity timeout, the open
conversations whose newest message (or, without one, whose opening) is
older than the timeout. It is one conditional UPDATE per account: replicas
sweeping at the same moment close each conversation once (the second
UPDATE re-checks `state = 'open'` after the first commits and skips it),
so each closing writes exactly one `conversation_updated` event.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import and_, func, or_, select, update

from convhub.server.domain import rooms
from convhub.server.domain.channels import ACCOUNT_CHANNEL
from convhub.server.errors import FailedPrecondition
from convhub.server.events.outbox import append_events
from convhub.server.services import resources
from convhub.server.services.errors import found
from convhub.server.store import accounts, conversations
from convhub.server.store.db import Database, now_us
from convhub.server.store.models import Message, table
from convhub.server.store.rows import ConversationRow
from convhub.v1 import conversation_pb2, event_pb2

# A timeout longer than this is "never" (and its cutoff would not fit a BIGINT of microseconds).
NEVER_SECONDS = 100 * 366 * 86400
_rooms = conversations.conversations
_messages = table(Message)


class LifecycleService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def close(self, customer_id: str, conversation_id: str) -> conversation_pb2.Conversation:
        """Close an open conversation; a closed one is returned unchanged (no event)."""
        return self._set_state(customer_id, conversation_id, rooms.CLOSED)

    def reopen(self, customer_id: str, conversation_id: str) -> conversation_pb2.Conversation:
        """Reopen a closed conversation; FAILED_PRECONDITION if another open room holds its key now."""
        return self._set_state(customer_id, conversation_id, rooms.OPEN)

    def _set_state(self, customer_id: str, conversation_id: str, state: str) -> conversation_pb2.Conversation:
        with self.db.writer.begin() as conn:
            row = found(conversations.live.get(conn, customer_id, conversation_id), "conversation", conversation_id)
            if row.state == state:
                return resources.conversation(row)
            try:
                conversations.update_conversation(conn, conversation_id, {"state": state, "tm_update": now_us()})
            except conversations.OpenRoomTaken:
                raise FailedPrecondition(
                    "another open conversation now holds the same channel, self and peer; close it first",
                    reason="OPEN_CONVERSATION_EXISTS",
                ) from None
            result = resources.conversation(conversations.live.by_id(conn, conversation_id))
            append_events(conn, customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, result)])
        return result

    def close_inactive(self, now: int | None = None) -> int:
        """Close every conversation idle past its account's inactivity timeout; how many were closed."""
        now = now_us() if now is None else now
        with self.db.read() as conn:
            timed = accounts.with_inactivity_timeout(conn)
        closed = 0
        for account in timed:
            if not account.address_target or account.inactivity_timeout_s > NEVER_SECONDS:
                continue
            cutoff = now - account.inactivity_timeout_s * 1_000_000
            newest = (
                select(func.max(_messages.c.tm_create))
                .where(_messages.c.conversation_id == _rooms.c.id)
                .scalar_subquery()
            )
            statement = (
                update(_rooms)
                .where(
                    _rooms.c.customer_id == account.customer_id,
                    _rooms.c.type == ACCOUNT_CHANNEL[account.type],
                    _rooms.c.state == rooms.OPEN,
                    _rooms.c.tm_delete.is_(None),
                    or_(
                        _rooms.c.account_id == account.id,
                        and_(_rooms.c.account_id.is_(None), _rooms.c.self_target == account.address_target),
                    ),
                    func.coalesce(newest, _rooms.c.tm_create) < cutoff,
                )
                .values(state=rooms.CLOSED, tm_update=now)
                .returning(*_rooms.c)
            )
            with self.db.writer.begin() as conn:
                rows = cast("list[ConversationRow]", conn.execute(statement).all())
                if rows:
                    append_events(
                        conn,
                        account.customer_id,
                        [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, resources.conversation(r)) for r in rows],
                    )
            closed += len(rows)
        return closed
