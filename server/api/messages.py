"""ConversationService: messages (List/Get/Send/Delete)."""

from __future__ import annotations

from convhub.server.api import convert, pagination, validation
from convhub.server.api.base import Handlers, get_live, soft_delete
from convhub.server.api.dispatch import Caller, read_only
from convhub.server.api.errors import Unimplemented
from convhub.server.events.outbox import append_events
from convhub.server.store.models import Conversation, Message
from convhub.v1 import conversation_service_pb2 as pb
from convhub.v1 import event_pb2, message_pb2

conversations = Conversation.__table__
messages = Message.__table__
_list = pagination.Lister(messages, ["conversation_id"])


class MessageMethods(Handlers):
    @read_only
    def ListMessages(self, request: pb.ListMessagesRequest, caller: Caller) -> pb.ListMessagesResponse:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        page = pagination.parse(request.page_size, request.page_token, f"messages:{conversation_id}")
        with self.db.read() as conn:
            rows, token = _list.fetch(conn, page, caller.customer_id, conversation_id=conversation_id)
            if not rows:  # only an empty page pays for telling "no messages" from "no conversation"
                get_live(conn, conversations, "conversation", caller.customer_id, conversation_id)
        return pb.ListMessagesResponse(result=[convert.message(r) for r in rows], next_page_token=token)

    @read_only
    def GetMessage(self, request: pb.GetMessageRequest, caller: Caller) -> message_pb2.Message:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        message_id = validation.require_uuid("id", request.id)
        with self.db.read() as conn:
            row = get_live(conn, messages, "message", caller.customer_id, message_id, conversation_id=conversation_id)
        return convert.message(row)

    @read_only
    def SendMessage(self, request: pb.SendMessageRequest, caller: Caller) -> message_pb2.Message:
        """Validates and checks the conversation, then refuses: channel delivery is not built yet."""
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        validation.max_length("text", request.text, validation.MAX_TEXT)
        validation.medias("medias", request.medias)
        validation.request_id(request.request_id)
        with self.db.read() as conn:
            get_live(conn, conversations, "conversation", caller.customer_id, conversation_id)
        raise Unimplemented(
            "sending messages is not available yet: outbound channel delivery is not part of this release",
            reason="SEND_NOT_AVAILABLE",
        )

    def DeleteMessage(self, request: pb.DeleteMessageRequest, caller: Caller) -> message_pb2.Message:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        message_id = validation.require_uuid("id", request.id)
        with self.engine.begin() as conn:
            row = soft_delete(
                conn, messages, "message", caller.customer_id, message_id, conversation_id=conversation_id
            )
            result = convert.message(row)
            append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_DELETED, result)])
        return result
