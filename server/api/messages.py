"""ConversationService (messages) over gRPC/REST: requests -> MessageService calls."""

from __future__ import annotations

from convhub.server.api import pagination, validation
from convhub.server.api.dispatch import Caller, may_run_on_loop
from convhub.server.domain.messages import MAX_TEXT
from convhub.server.services import resources
from convhub.server.services.messages import MessageService
from convhub.server.services.sending import OutboundMessage, SendingService
from convhub.v1 import conversation_service_pb2 as pb
from convhub.v1 import message_pb2


class MessageMethods:
    messages: MessageService
    sending: SendingService

    @may_run_on_loop
    def ListMessages(self, request: pb.ListMessagesRequest, caller: Caller) -> pb.ListMessagesResponse:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        page = pagination.parse(request.page_size, request.page_token, f"messages:{conversation_id}")
        result, token = self.messages.list(caller.customer_id, conversation_id, page)
        return pb.ListMessagesResponse(result=result, next_page_token=token)

    @may_run_on_loop
    def GetMessage(self, request: pb.GetMessageRequest, caller: Caller) -> message_pb2.Message:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        message_id = validation.require_uuid("id", request.id)
        return self.messages.get(caller.customer_id, conversation_id, message_id)

    async def SendMessage(self, request: pb.SendMessageRequest, caller: Caller) -> message_pb2.Message:
        return await self.sending.send(
            OutboundMessage(
                customer_id=caller.customer_id,
                conversation_id=validation.require_uuid("conversation_id", request.conversation_id),
                text=validation.max_length("text", request.text, MAX_TEXT),
                medias=validation.medias("medias", request.medias),
                request_id=validation.request_id(request.request_id),
                channel=validation.enum_name("channel", resources.CONVERSATION_TYPE, request.channel, required=False),
                allow_fallback=request.allow_fallback,
                subject=validation.max_length("subject", request.subject, validation.MAX_SUBJECT),
            )
        )

    def DeleteMessage(self, request: pb.DeleteMessageRequest, caller: Caller) -> message_pb2.Message:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        message_id = validation.require_uuid("id", request.id)
        return self.messages.delete(caller.customer_id, conversation_id, message_id)
