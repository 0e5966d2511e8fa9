"""Conversations: read, update, delete. There is no create: inbound messages open rooms (services/ingest.py)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from convhub.server.config import Settings
from convhub.server.domain import rooms
from convhub.server.domain.addresses import AddressError, normalize_target
from convhub.server.domain.violations import RuleViolation
from convhub.server.errors import AlreadyExists
from convhub.server.events.outbox import append_events
from convhub.server.services import resources
from convhub.server.services.errors import found, invalid_argument
from convhub.server.store import conversations
from convhub.server.store.conversations import ConversationFilter
from convhub.server.store.db import Database, now_us
from convhub.server.store.pages import Page
from convhub.v1 import conversation_pb2, event_pb2

NO_FILTER = ConversationFilter()


@dataclass(frozen=True)
class ConversationPatch:
    """An update (AIP-134): only `fields` are written. `state` is a stored name (`open`, `closed`)."""

    customer_id: str
    conversation_id: str
    fields: frozenset[str]
    name: str = ""
    detail: str = ""
    owner_type: str = ""
    owner_id: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    state: str | None = None


class ConversationService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def list(
        self, customer_id: str, page: Page, where: ConversationFilter = NO_FILTER
    ) -> tuple[list[conversation_pb2.Conversation], str]:
        """A page of the customer's conversations matching `where` (a typed peer target is normalised first)."""
        if where.peer_type and where.peer_target:
            try:
                target = normalize_target(
                    where.peer_type, where.peer_target, default_region=self.settings.default_region
                )
            except AddressError as exc:
                raise invalid_argument(RuleViolation("peer.target", str(exc))) from None
            where = replace(where, peer_target=target)
        with self.db.read() as conn:
            rows, token = conversations.page_filtered(conn, page, customer_id, where)
        return [resources.conversation(r) for r in rows], token

    def unassign(self, customer_id: str, conversation_id: str) -> conversation_pb2.Conversation:
        """VoIPBIN's unassign: the owner cleared, as an update (same event)."""
        fields = frozenset({"owner_type", "owner_id"})
        return self.update(ConversationPatch(customer_id=customer_id, conversation_id=conversation_id, fields=fields))

    def get(self, customer_id: str, conversation_id: str) -> conversation_pb2.Conversation:
        with self.db.read() as conn:
            row = conversations.live.get(conn, customer_id, conversation_id)
        return resources.conversation(found(row, "conversation", conversation_id))

    def update(self, patch: ConversationPatch) -> conversation_pb2.Conversation:
        """Reopening a room whose key another open room holds is ALREADY_EXISTS (invariant 2)."""
        values: dict[str, object] = {name: getattr(patch, name) for name in patch.fields}
        with self.db.writer.begin() as conn:
            found(
                conversations.live.get(conn, patch.customer_id, patch.conversation_id),
                "conversation",
                patch.conversation_id,
            )
            if values:
                values["tm_update"] = now_us()
                try:
                    conversations.update_conversation(conn, patch.conversation_id, values)
                except conversations.OpenRoomTaken:
                    raise AlreadyExists(
                        "another open conversation exists for the same channel, self and peer",
                        reason="OPEN_CONVERSATION_EXISTS",
                    ) from None
            row = conversations.live.get(conn, patch.customer_id, patch.conversation_id)
            assert row is not None  # checked above, in this transaction
            result = resources.conversation(row)
            if values:
                append_events(conn, patch.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, result)])
        return result

    def delete(self, customer_id: str, conversation_id: str) -> conversation_pb2.Conversation:
        """Soft-delete and close: the key is free for the next inbound message to open a new room."""
        with self.db.writer.begin() as conn:
            row = found(
                conversations.live.soft_delete(conn, customer_id, conversation_id, also_set={"state": rooms.CLOSED}),
                "conversation",
                conversation_id,
            )
            result = resources.conversation(row)
            append_events(conn, customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_DELETED, result)])
        return result
