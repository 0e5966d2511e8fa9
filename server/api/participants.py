"""ConversationService (participants) over gRPC/REST: requests -> ParticipantService calls."""

from __future__ import annotations

from collections.abc import Sequence

from convhub.server.api import pagination, validation
from convhub.server.api.dispatch import Caller, may_run_on_loop
from convhub.server.domain.addresses import Address
from convhub.server.domain.updates import PARTICIPANT_UPDATABLE
from convhub.server.errors import InvalidArgument
from convhub.server.services import resources
from convhub.server.services.participants import NewParticipant, ParticipantPatch, ParticipantService
from convhub.v1 import common_pb2, participant_pb2
from convhub.v1 import conversation_service_pb2 as pb

MAX_OPTED_OUT = 8  # the contract's max_items


def _addresses(field: str, items: Sequence[common_pb2.Address]) -> list[Address]:
    return [validation.address(f"{field}[{i}]", a) for i, a in enumerate(items)]


def _preferred_channel(p: participant_pb2.Participant) -> str:
    return (
        validation.enum_name(
            "participant.preferred_channel", resources.CONVERSATION_TYPE, p.preferred_channel, required=False
        )
        or ""
    )


def _opted_out_channels(p: participant_pb2.Participant) -> list[str]:
    field = "participant.opted_out_channels"
    if len(p.opted_out_channels) > MAX_OPTED_OUT:
        raise InvalidArgument(field, f"at most {MAX_OPTED_OUT} items")
    names = [
        validation.enum_name(f"{field}[{i}]", resources.CONVERSATION_TYPE, n, required=True)
        for i, n in enumerate(p.opted_out_channels)
    ]
    return sorted({n for n in names if n})


class ParticipantMethods:
    participants: ParticipantService

    @may_run_on_loop
    def ListParticipants(self, request: pb.ListParticipantsRequest, caller: Caller) -> pb.ListParticipantsResponse:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        page = pagination.parse(request.page_size, request.page_token, f"participants:{conversation_id}")
        result, token = self.participants.list(caller.customer_id, conversation_id, page)
        return pb.ListParticipantsResponse(result=result, next_page_token=token)

    def AddParticipant(self, request: pb.AddParticipantRequest, caller: Caller) -> participant_pb2.Participant:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        if not request.HasField("participant"):
            raise InvalidArgument("participant", "is required")
        p = request.participant
        return self.participants.add(
            NewParticipant(
                customer_id=caller.customer_id,
                conversation_id=conversation_id,
                name=validation.max_length("participant.name", p.name, validation.MAX_NAME),
                preferred_channel=_preferred_channel(p),
                addresses=_addresses("participant.addresses", p.addresses),
                request_id=validation.request_id(request.request_id),
            )
        )

    def UpdateParticipant(self, request: pb.UpdateParticipantRequest, caller: Caller) -> participant_pb2.Participant:
        if not request.HasField("participant"):
            raise InvalidArgument("participant", "is required")
        p = request.participant
        conversation_id = validation.require_uuid("participant.conversation_id", p.conversation_id)
        participant_id = validation.require_uuid("participant.id", p.id)
        fields = frozenset(validation.update_fields(request.update_mask, p, PARTICIPANT_UPDATABLE))
        return self.participants.update(
            ParticipantPatch(
                customer_id=caller.customer_id,
                conversation_id=conversation_id,
                participant_id=participant_id,
                fields=fields,
                name=validation.max_length("participant.name", p.name, validation.MAX_NAME) if "name" in fields else "",
                preferred_channel=_preferred_channel(p) if "preferred_channel" in fields else "",
                addresses=_addresses("participant.addresses", p.addresses) if "addresses" in fields else (),
                opted_out_channels=_opted_out_channels(p) if "opted_out_channels" in fields else (),
            )
        )

    def RemoveParticipant(self, request: pb.RemoveParticipantRequest, caller: Caller) -> participant_pb2.Participant:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        participant_id = validation.require_uuid("id", request.id)
        return self.participants.remove(caller.customer_id, conversation_id, participant_id)
