"""IngestService over gRPC/REST: IngestMessageRequest -> InboundMessage, Ingested -> IngestMessageResponse."""

from __future__ import annotations

from convhub.server.api import validation
from convhub.server.api.dispatch import Caller
from convhub.server.domain.messages import MAX_TEXT
from convhub.server.errors import InvalidArgument
from convhub.server.services import resources
from convhub.server.services.ingest import InboundMessage, IngestService
from convhub.v1 import ingest_service_pb2 as pb


class IngestMethods:
    def __init__(self, ingest: IngestService) -> None:
        self.ingest = ingest

    async def IngestMessage(self, request: pb.IngestMessageRequest, caller: Caller) -> pb.IngestMessageResponse:
        """Check the request's shape here (errors name the field); the rules and the write are the service's."""
        account_id = validation.optional_uuid("account_id", request.account_id)
        channel = validation.enum_name("channel", resources.CONVERSATION_TYPE, request.channel, required=False)
        if not request.HasField("peer"):
            raise InvalidArgument("peer", "is required")
        text = validation.max_length("text", request.text, MAX_TEXT)
        subject = validation.max_length("subject", request.subject, validation.MAX_SUBJECT)
        medias = validation.medias("medias", request.medias)
        transaction_id = validation.max_length("transaction_id", request.transaction_id, validation.MAX_TRANSACTION_ID)
        request_id = validation.request_id(request.request_id)
        result = await self.ingest.ingest(
            InboundMessage(
                customer_id=caller.customer_id,
                peer=validation.address("peer", request.peer),
                channel=channel,
                account_id=account_id,
                self_address=validation.address("self", request.self) if request.HasField("self") else None,
                text=text,
                subject=subject,
                medias=medias,
                provider_message_id=transaction_id,
                request_id=request_id,
            )
        )
        return pb.IngestMessageResponse(
            message=result.message,
            conversation=result.conversation,
            conversation_created=result.conversation_created,
            duplicate=result.duplicate,
        )
