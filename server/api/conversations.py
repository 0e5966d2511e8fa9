"""ConversationService (conversations) over gRPC/REST: requests -> ConversationService calls."""

from __future__ import annotations

from convhub.server.api import convert, pagination, validation
from convhub.server.api.dispatch import Caller, read_only
from convhub.server.api.errors import InvalidArgument
from convhub.server.domain.updates import CONVERSATION_UPDATABLE
from convhub.server.services import resources
from convhub.server.services.conversations import ConversationPatch, ConversationService
from convhub.v1 import conversation_pb2
from convhub.v1 import conversation_service_pb2 as pb


def _text(fields: frozenset[str], name: str, value: str, limit: int) -> str:
    return validation.max_length(f"conversation.{name}", value, limit) if name in fields else ""


class ConversationMethods:
    conversations: ConversationService

    @read_only
    def ListConversations(self, request: pb.ListConversationsRequest, caller: Caller) -> pb.ListConversationsResponse:
        page = pagination.parse(request.page_size, request.page_token, "conversations")
        result, token = self.conversations.list(caller.customer_id, page)
        return pb.ListConversationsResponse(result=result, next_page_token=token)

    @read_only
    def GetConversation(self, request: pb.GetConversationRequest, caller: Caller) -> conversation_pb2.Conversation:
        return self.conversations.get(caller.customer_id, validation.require_uuid("id", request.id))

    def UpdateConversation(
        self, request: pb.UpdateConversationRequest, caller: Caller
    ) -> conversation_pb2.Conversation:
        if not request.HasField("conversation"):
            raise InvalidArgument("conversation", "is required")
        patch = request.conversation
        conversation_id = validation.require_uuid("conversation.id", patch.id)
        fields = frozenset(validation.update_fields(request.update_mask, patch, CONVERSATION_UPDATABLE))
        return self.conversations.update(
            ConversationPatch(
                customer_id=caller.customer_id,
                conversation_id=conversation_id,
                fields=fields,
                name=_text(fields, "name", patch.name, validation.MAX_NAME),
                detail=_text(fields, "detail", patch.detail, validation.MAX_DETAIL),
                owner_type=_text(fields, "owner_type", patch.owner_type, 64),
                owner_id=_text(fields, "owner_id", patch.owner_id, validation.MAX_NAME),
                metadata=convert.from_struct(patch.metadata) if "metadata" in fields else {},
                tags=validation.tags("conversation.tags", patch.tags) if "tags" in fields else [],
                state=(
                    validation.enum_name("conversation.state", resources.CONVERSATION_STATE, patch.state, required=True)
                    if "state" in fields
                    else None
                ),
            )
        )

    def DeleteConversation(
        self, request: pb.DeleteConversationRequest, caller: Caller
    ) -> conversation_pb2.Conversation:
        return self.conversations.delete(caller.customer_id, validation.require_uuid("id", request.id))
