"""IngestService: the inbound path. Match or open the room, store the message, write the events.

Idempotent twice over: a provider message id already seen in the same scope
(the account, or channel + our address) and a repeated `request_id` both
return the first message and store nothing.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from convhub.server.api import convert, validation
from convhub.server.api.base import Handlers, get_live
from convhub.server.api.dispatch import Caller
from convhub.server.api.errors import InvalidArgument
from convhub.server.domain.channels import ACCOUNT_CHANNEL, CHANNEL_ADDRESS_TYPE
from convhub.server.events.outbox import append_events
from convhub.server.store import idempotency
from convhub.server.store.db import RowValues, new_id, now_us, retry_on_conflict
from convhub.server.store.models import Account, Conversation, Message, Participant, ParticipantAddress
from convhub.server.store.rooms import RoomKey, match_room
from convhub.v1 import event_pb2
from convhub.v1 import ingest_service_pb2 as pb

accounts = Account.__table__
conversations = Conversation.__table__
messages = Message.__table__
participants = Participant.__table__
participant_addresses = ParticipantAddress.__table__

_insert_message = insert(messages)
_message_by_id = select(messages).where(
    messages.c.customer_id == bindparam("customer_id"), messages.c.id == bindparam("message_id")
)
_message_by_provider_id = select(messages).where(
    messages.c.customer_id == bindparam("customer_id"),
    messages.c.dedupe_scope == bindparam("scope"),
    messages.c.transaction_id == bindparam("transaction_id"),
)
_conversation_by_id = select(conversations).where(conversations.c.id == bindparam("conversation_id"))
# The peer's participant (found by address) records the channel and time they last wrote.
_mark_peer_active = (
    update(participants)
    .where(
        participants.c.conversation_id == bindparam("room_id"),
        participants.c.id.in_(
            select(participant_addresses.c.participant_id).where(
                participant_addresses.c.customer_id == bindparam("owner_id"),
                participant_addresses.c.type == bindparam("peer_type"),
                participant_addresses.c.target == bindparam("peer_target"),
            )
        ),
    )
    .values(last_active_channel=bindparam("channel"), tm_last_active=bindparam("now"))
)


class IngestMethods(Handlers):
    @retry_on_conflict
    def IngestMessage(self, request: pb.IngestMessageRequest, caller: Caller) -> pb.IngestMessageResponse:
        account_id = validation.optional_uuid("account_id", request.account_id)
        channel = validation.enum_name("channel", convert.CONVERSATION_TYPE, request.channel, required=False)
        if not request.HasField("peer"):
            raise InvalidArgument("peer", "is required")
        text = validation.max_length("text", request.text, validation.MAX_TEXT)
        subject = validation.max_length("subject", request.subject, validation.MAX_SUBJECT)
        medias = validation.medias("medias", request.medias)
        if not text and not medias and not subject:
            raise InvalidArgument("text", "a message needs text, a subject or media")
        transaction_id = validation.max_length("transaction_id", request.transaction_id, validation.MAX_TRANSACTION_ID)
        request_id = validation.request_id(request.request_id)
        if account_id is None and channel is None:
            raise InvalidArgument("channel", "is required when no account_id is given")
        if account_id is None and not request.HasField("self"):
            raise InvalidArgument("self", "is required when no account_id is given")

        account = None
        if account_id:
            with self.reader.connect() as conn:
                account = get_live(conn, accounts, "account", caller.customer_id, account_id)
            account_channel = ACCOUNT_CHANNEL[account.type]
            if channel is not None and channel != account_channel:
                raise InvalidArgument("channel", f"account {account_id} carries {account_channel}, not {channel}")
            channel = account_channel
        assert channel is not None
        address_type = CHANNEL_ADDRESS_TYPE[channel]
        region = self.settings.default_region
        if request.HasField("self"):
            self_addr = validation.address("self", request.self, expected_type=address_type, default_region=region)
        elif account is not None and account.address_target:
            self_addr = (account.address_type, account.address_target, account.address_name)
        else:
            raise InvalidArgument("self", "is required: the account has no address")
        peer_addr = validation.address("peer", request.peer, expected_type=address_type, default_region=region)
        scope = account_id or f"{channel}:{self_addr[1]}"

        with self.engine.begin() as conn:
            duplicate = self._find_duplicate(conn, caller, request_id, scope, transaction_id)
            if duplicate is not None:
                return duplicate

            key = RoomKey(caller.customer_id, channel, self_addr[0], self_addr[1], peer_addr[0], peer_addr[1])
            room = match_room(conn, key, account_id=account_id, self_name=self_addr[2], peer_name=peer_addr[2])
            now = now_us()
            message = {
                "id": new_id(),
                "customer_id": caller.customer_id,
                "conversation_id": room.row.id,
                "direction": "incoming",
                "status": "done",
                "channel": channel,
                "source_type": peer_addr[0],
                "source_target": peer_addr[1],
                "source_name": peer_addr[2],
                "destination_type": self_addr[0],
                "destination_target": self_addr[1],
                "destination_name": self_addr[2],
                "text": text,
                "subject": subject,
                "medias": medias,
                "transaction_id": transaction_id or None,
                "dedupe_scope": scope,
                "tm_create": now,
                "tm_update": now,
                "tm_delete": None,
            }
            conn.execute(_insert_message, message)
            if not room.created:
                conn.execute(
                    _mark_peer_active,
                    {
                        "room_id": room.row.id,
                        "owner_id": caller.customer_id,
                        "peer_type": peer_addr[0],
                        "peer_target": peer_addr[1],
                        "channel": channel,
                        "now": now,
                    },
                )
            if request_id:
                idempotency.record(conn, caller.customer_id, "IngestMessage", request_id, message["id"])
            response = pb.IngestMessageResponse(
                message=convert.message(RowValues(message)),
                conversation=convert.conversation(room.row),
                conversation_created=room.created,
            )
            changes: list[tuple[int, Any]] = []
            if room.created:
                changes.append((event_pb2.EVENT_TYPE_CONVERSATION_CREATED, response.conversation))
                changes.append(
                    (
                        event_pb2.EVENT_TYPE_PARTICIPANT_ADDED,
                        convert.participant(room.peer_participant, [_peer(peer_addr)]),
                    )
                )
            changes.append((event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, response.message))
            append_events(conn, caller.customer_id, changes)
        return response

    def _find_duplicate(
        self, conn: Connection, caller: Caller, request_id: str | None, scope: str, transaction_id: str
    ) -> pb.IngestMessageResponse | None:
        message_id = idempotency.lookup(conn, caller.customer_id, "IngestMessage", request_id) if request_id else None
        if message_id:
            row = conn.execute(_message_by_id, {"customer_id": caller.customer_id, "message_id": message_id}).first()
        elif transaction_id:
            params = {"customer_id": caller.customer_id, "scope": scope, "transaction_id": transaction_id}
            row = conn.execute(_message_by_provider_id, params).first()
        else:
            return None
        if row is None:
            return None
        room = conn.execute(_conversation_by_id, {"conversation_id": row.conversation_id}).one()
        return pb.IngestMessageResponse(
            message=convert.message(row), conversation=convert.conversation(room), duplicate=True
        )


def _peer(peer: tuple[str, str, str]) -> RowValues:
    return RowValues({"type": peer[0], "target": peer[1], "target_name": peer[2]})
