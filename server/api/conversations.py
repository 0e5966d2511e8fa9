"""ConversationService (conversations) over gRPC/REST: requests -> ConversationService calls."""

from __future__ import annotations

from convhub.server.api import convert, pagination, validation
from convhub.server.api.dispatch import Caller, may_run_on_loop
from convhub.server.domain.messages import MAX_TEXT
from convhub.server.domain.updates import CONVERSATION_UPDATABLE
from convhub.server.errors import InvalidArgument
from convhub.server.services import resources
from convhub.server.services.conversations import ConversationPatch, ConversationService
from convhub.server.services.lifecycle import LifecycleService
from convhub.server.services.sending import AddressedMessage, SendingService
from convhub.server.store.conversations import ConversationFilter
from convhub.v1 import conversation_pb2
from convhub.v1 import conversation_service_pb2 as pb


def _text(fields: frozenset[str], name: str, value: str, limit: int) -> str:
    return validation.max_length(f"conversation.{name}", value, limit) if name in fields else ""


def _filter(request: pb.ListConversationsRequest) -> ConversationFilter:
    """The list filters of a request in stored forms; a bad enum or peer names its field."""
    peer_type = validation.enum_name("peer.type", resources.ADDRESS_TYPE, request.peer.type, required=False)
    return ConversationFilter(
        owner_id=request.owner_id,
        tag=request.tag,
        state=validation.enum_name("state", resources.CONVERSATION_STATE, request.state, required=False),
        type=validation.enum_name("type", resources.CONVERSATION_TYPE, request.type, required=False),
        peer_type=peer_type,
        peer_target=request.peer.target.strip(),
        updated_since_us=request.updated_since.ToMicroseconds() if request.HasField("updated_since") else None,
        account_id=validation.optional_uuid("account_id", request.account_id) or "",
    )


class ConversationMethods:
    conversations: ConversationService
    lifecycle: LifecycleService
    sending: SendingService

    @may_run_on_loop
    def ListConversations(self, request: pb.ListConversationsRequest, caller: Caller) -> pb.ListConversationsResponse:
        where = _filter(request)
        scope = "conversations" if where.is_empty() else f"conversations:{where.fingerprint()}"
        page = pagination.parse(request.page_size, request.page_token, scope)
        result, token = self.conversations.list(caller.customer_id, page, where)
        return pb.ListConversationsResponse(result=result, next_page_token=token)

    @may_run_on_loop
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

    def UnassignConversation(
        self, request: pb.UnassignConversationRequest, caller: Caller
    ) -> conversation_pb2.Conversation:
        return self.conversations.unassign(caller.customer_id, validation.require_uuid("id", request.id))

    def DeleteConversation(
        self, request: pb.DeleteConversationRequest, caller: Caller
    ) -> conversation_pb2.Conversation:
        return self.conversations.delete(caller.customer_id, validation.require_uuid("id", request.id))

    def CloseConversation(self, request: pb.CloseConversationRequest, caller: Caller) -> conversation_pb2.Conversation:
        return self.lifecycle.close(caller.customer_id, validation.require_uuid("id", request.id))

    def ReopenConversation(
        self, request: pb.ReopenConversationRequest, caller: Caller
    ) -> conversation_pb2.Conversation:
        return self.lifecycle.reopen(caller.customer_id, validation.require_uuid("id", request.id))

    async def SendToAddress(self, request: pb.SendToAddressRequest, caller: Caller) -> pb.SendToAddressResponse:
        if not request.HasField("peer"):
            raise InvalidArgument("peer", "is required")
        result = await self.sending.send_to_address(
            AddressedMessage(
                customer_id=caller.customer_id,
                peer=validation.address("peer", request.peer),
                account_id=validation.optional_uuid("account_id", request.account_id),
                self_address=validation.address("self", request.self) if request.HasField("self") else None,
                channel=validation.enum_name("channel", resources.CONVERSATION_TYPE, request.channel, required=False),
                text=validation.max_length("text", request.text, MAX_TEXT),
                medias=validation.medias("medias", request.medias),
                request_id=validation.request_id(request.request_id),
                subject=validation.max_length("subject", request.subject, validation.MAX_SUBJECT),
            )
        )
        return pb.SendToAddressResponse(
            conversation=result.conversation, message=result.message, conversation_created=result.conversation_created
        )
