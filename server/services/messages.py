"""Messages in a conversation: read and delete (sending is services/sending.py)."""

from __future__ import annotations

from convhub.server.config import Settings
from convhub.server.errors import NotFound
from convhub.server.events.outbox import append_events
from convhub.server.services import resources
from convhub.server.services.errors import found
from convhub.server.store import conversations, messages
from convhub.server.store.db import Database
from convhub.server.store.pages import Page
from convhub.v1 import event_pb2, message_pb2


class MessageService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def list(self, customer_id: str, conversation_id: str, page: Page) -> tuple[list[message_pb2.Message], str]:
        with self.db.read() as conn:
            rows, token = messages.live.page(conn, page, customer_id, conversation_id)
            # Only an empty page pays for telling "no messages" from "no conversation".
            missing = not rows and conversations.live.get(conn, customer_id, conversation_id) is None
        if missing:
            raise NotFound("conversation", conversation_id)
        return [resources.message(r) for r in rows], token

    def get(self, customer_id: str, conversation_id: str, message_id: str) -> message_pb2.Message:
        with self.db.read() as conn:
            row = messages.live.get(conn, customer_id, message_id, conversation_id)
        return resources.message(found(row, "message", message_id))

    def delete(self, customer_id: str, conversation_id: str, message_id: str) -> message_pb2.Message:
        with self.db.writer.begin() as conn:
            row = found(
                messages.live.soft_delete(conn, customer_id, message_id, conversation_id), "message", message_id
            )
            result = resources.message(row)
            append_events(conn, customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_DELETED, result)])
        return result
