"""ConversationService: conversations (List/Get/Update/Delete; opened only by ingest)."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from convhub.server.api import convert, pagination, validation
from convhub.server.api.base import Handlers, get_live, soft_delete
from convhub.server.api.dispatch import Caller, read_only
from convhub.server.api.errors import AlreadyExists, InvalidArgument
from convhub.server.domain.updates import CONVERSATION_UPDATABLE
from convhub.server.events.outbox import append_events
from convhub.server.store.db import now_us
from convhub.server.store.models import Conversation
from convhub.v1 import conversation_pb2, event_pb2
from convhub.v1 import conversation_service_pb2 as pb

conversations = Conversation.__table__
_list = pagination.Lister(conversations)


class ConversationMethods(Handlers):
    @read_only
    def ListConversations(self, request: pb.ListConversationsRequest, caller: Caller) -> pb.ListConversationsResponse:
        page = pagination.parse(request.page_size, request.page_token, "conversations")
        with self.db.read() as conn:
            rows, token = _list.fetch(conn, page, caller.customer_id)
        return pb.ListConversationsResponse(result=[convert.conversation(r) for r in rows], next_page_token=token)

    @read_only
    def GetConversation(self, request: pb.GetConversationRequest, caller: Caller) -> conversation_pb2.Conversation:
        conversation_id = validation.require_uuid("id", request.id)
        with self.db.read() as conn:
            return convert.conversation(
                get_live(conn, conversations, "conversation", caller.customer_id, conversation_id)
            )

    def UpdateConversation(
        self, request: pb.UpdateConversationRequest, caller: Caller
    ) -> conversation_pb2.Conversation:
        if not request.HasField("conversation"):
            raise InvalidArgument("conversation", "is required")
        patch = request.conversation
        conversation_id = validation.require_uuid("conversation.id", patch.id)
        fields = validation.update_fields(request.update_mask, patch, CONVERSATION_UPDATABLE)
        values: dict[str, object] = {}
        for name in fields:
            if name in ("name", "owner_id"):
                values[name] = validation.max_length(f"conversation.{name}", getattr(patch, name), validation.MAX_NAME)
            elif name == "detail":
                values[name] = validation.max_length("conversation.detail", patch.detail, validation.MAX_DETAIL)
            elif name == "owner_type":
                values[name] = validation.max_length("conversation.owner_type", patch.owner_type, 64)
            elif name == "metadata":
                values["metadata"] = convert.from_struct(patch.metadata)
            elif name == "tags":
                values["tags"] = validation.tags("conversation.tags", patch.tags)
            elif name == "state":
                values["state"] = validation.enum_name(
                    "conversation.state", convert.CONVERSATION_STATE, patch.state, required=True
                )
        with self.engine.begin() as conn:
            get_live(conn, conversations, "conversation", caller.customer_id, conversation_id)
            if values:
                values["tm_update"] = now_us()
                try:
                    with conn.begin_nested():
                        conn.execute(update(conversations).where(conversations.c.id == conversation_id).values(values))
                except IntegrityError:
                    raise AlreadyExists(
                        "another open conversation exists for the same channel, self and peer",
                        reason="OPEN_CONVERSATION_EXISTS",
                    ) from None
            row = get_live(conn, conversations, "conversation", caller.customer_id, conversation_id)
            result = convert.conversation(row)
            if values:
                append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, result)])
        return result

    def DeleteConversation(
        self, request: pb.DeleteConversationRequest, caller: Caller
    ) -> conversation_pb2.Conversation:
        conversation_id = validation.require_uuid("id", request.id)
        with self.engine.begin() as conn:
            row = soft_delete(
                conn, conversations, "conversation", caller.customer_id, conversation_id, also_set={"state": "closed"}
            )
            result = convert.conversation(row)
            append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_DELETED, result)])
        return result
