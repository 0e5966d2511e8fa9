"""ConversationService: participants (List/Add/Update/Remove), each holding one or more addresses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from convhub.server.api import convert, pagination, validation
from convhub.server.api.base import Handlers, get_live, soft_delete
from convhub.server.api.dispatch import Caller, read_only
from convhub.server.api.errors import InvalidArgument
from convhub.server.domain.updates import PARTICIPANT_UPDATABLE
from convhub.server.events.outbox import append_events
from convhub.server.store import idempotency
from convhub.server.store.db import new_id, now_us, retry_on_conflict
from convhub.server.store.models import Conversation, Participant, ParticipantAddress
from convhub.v1 import common_pb2, event_pb2, participant_pb2
from convhub.v1 import conversation_service_pb2 as pb

conversations = Conversation.__table__
participants = Participant.__table__
addresses = ParticipantAddress.__table__
_list = pagination.Lister(participants, ["conversation_id"])

MAX_ADDRESSES = 20


def load_participant(conn: Connection, row: Any) -> participant_pb2.Participant:
    addrs = conn.execute(
        select(addresses).where(addresses.c.participant_id == row.id).order_by(addresses.c.position)
    ).all()
    return convert.participant(row, list(addrs))


def write_addresses(
    conn: Connection, customer_id: str, participant_id: str, items: Sequence[tuple[str, str, str]]
) -> None:
    conn.execute(delete(addresses).where(addresses.c.participant_id == participant_id))
    conn.execute(
        insert(addresses),
        [
            {
                "id": new_id(),
                "participant_id": participant_id,
                "customer_id": customer_id,
                "position": i,
                "type": t,
                "target": target,
                "target_name": name,
            }
            for i, (t, target, name) in enumerate(items)
        ],
    )


class ParticipantMethods(Handlers):
    def _addresses(self, field: str, items: Sequence[common_pb2.Address]) -> list[tuple[str, str, str]]:
        if not items:
            raise InvalidArgument(field, "at least one address is required")
        if len(items) > MAX_ADDRESSES:
            raise InvalidArgument(field, f"at most {MAX_ADDRESSES} addresses")
        region = self.settings.default_region
        return [
            validation.address(f"{field}[{i}]", a, expected_type=None, default_region=region)
            for i, a in enumerate(items)
        ]

    @read_only
    def ListParticipants(self, request: pb.ListParticipantsRequest, caller: Caller) -> pb.ListParticipantsResponse:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        page = pagination.parse(request.page_size, request.page_token, f"participants:{conversation_id}")
        with self.db.read() as conn:
            get_live(conn, conversations, "conversation", caller.customer_id, conversation_id)
            rows, token = _list.fetch(conn, page, caller.customer_id, conversation_id=conversation_id)
            result = [load_participant(conn, r) for r in rows]
        return pb.ListParticipantsResponse(result=result, next_page_token=token)

    @retry_on_conflict
    def AddParticipant(self, request: pb.AddParticipantRequest, caller: Caller) -> participant_pb2.Participant:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        if not request.HasField("participant"):
            raise InvalidArgument("participant", "is required")
        p = request.participant
        name = validation.max_length("participant.name", p.name, validation.MAX_NAME)
        preferred = validation.enum_name(
            "participant.preferred_channel", convert.CONVERSATION_TYPE, p.preferred_channel, required=False
        )
        addrs = self._addresses("participant.addresses", p.addresses)
        request_id = validation.request_id(request.request_id)
        with self.engine.begin() as conn:
            get_live(conn, conversations, "conversation", caller.customer_id, conversation_id)
            if request_id:
                existing = idempotency.lookup(conn, caller.customer_id, "AddParticipant", request_id)
                if existing:
                    return load_participant(
                        conn, conn.execute(select(participants).where(participants.c.id == existing)).one()
                    )
            now = now_us()
            participant_id = new_id()
            conn.execute(
                insert(participants).values(
                    id=participant_id,
                    customer_id=caller.customer_id,
                    conversation_id=conversation_id,
                    name=name,
                    preferred_channel=preferred or "",
                    last_active_channel="",
                    tm_create=now,
                    tm_update=now,
                )
            )
            write_addresses(conn, caller.customer_id, participant_id, addrs)
            if request_id:
                idempotency.record(conn, caller.customer_id, "AddParticipant", request_id, participant_id)
            result = load_participant(
                conn, conn.execute(select(participants).where(participants.c.id == participant_id)).one()
            )
            append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_ADDED, result)])
        return result

    def UpdateParticipant(self, request: pb.UpdateParticipantRequest, caller: Caller) -> participant_pb2.Participant:
        if not request.HasField("participant"):
            raise InvalidArgument("participant", "is required")
        p = request.participant
        conversation_id = validation.require_uuid("participant.conversation_id", p.conversation_id)
        participant_id = validation.require_uuid("participant.id", p.id)
        fields = validation.update_fields(request.update_mask, p, PARTICIPANT_UPDATABLE)
        values: dict[str, object] = {}
        new_addresses = None
        if "name" in fields:
            values["name"] = validation.max_length("participant.name", p.name, validation.MAX_NAME)
        if "preferred_channel" in fields:
            values["preferred_channel"] = (
                validation.enum_name(
                    "participant.preferred_channel", convert.CONVERSATION_TYPE, p.preferred_channel, required=False
                )
                or ""
            )
        if "addresses" in fields:
            new_addresses = self._addresses("participant.addresses", p.addresses)
        with self.engine.begin() as conn:
            get_live(
                conn, participants, "participant", caller.customer_id, participant_id, conversation_id=conversation_id
            )
            changed = bool(values) or new_addresses is not None
            if changed:
                values["tm_update"] = now_us()
                conn.execute(update(participants).where(participants.c.id == participant_id).values(values))
            if new_addresses is not None:
                write_addresses(conn, caller.customer_id, participant_id, new_addresses)
            result = load_participant(
                conn, conn.execute(select(participants).where(participants.c.id == participant_id)).one()
            )
            if changed:
                append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_UPDATED, result)])
        return result

    def RemoveParticipant(self, request: pb.RemoveParticipantRequest, caller: Caller) -> participant_pb2.Participant:
        conversation_id = validation.require_uuid("conversation_id", request.conversation_id)
        participant_id = validation.require_uuid("id", request.id)
        with self.engine.begin() as conn:
            row = soft_delete(
                conn, participants, "participant", caller.customer_id, participant_id, conversation_id=conversation_id
            )
            result = load_participant(conn, row)
            append_events(conn, caller.customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_REMOVED, result)])
        return result
