"""IngestService: the inbound path. Match or open the room, store the message, write the events.

Idempotent twice over: a provider message id already seen in the same scope
(the account, or channel + our address) and a repeated `request_id` both
return the first message and store nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update

from convhub.server.api import convert, validation
from convhub.server.api.base import Handlers, get_live
from convhub.server.api.dispatch import Caller
from convhub.server.api.errors import InvalidArgument
from convhub.server.config import Settings
from convhub.server.domain.channels import ACCOUNT_CHANNEL, CHANNEL_ADDRESS_TYPE
from convhub.server.events.outbox import append_event_groups
from convhub.server.store import idempotency
from convhub.server.store.db import Database, RowValues, new_id, now_us, retry_on_conflict
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.group_commit import GroupCommit
from convhub.server.store.keysets import KeyLookup
from convhub.server.store.models import Account, Conversation, Message, Participant, ParticipantAddress
from convhub.server.store.rooms import PARTICIPANT_INSERTS, Room, RoomKey, RoomRequest, match_rooms
from convhub.v1 import event_pb2
from convhub.v1 import ingest_service_pb2 as pb

accounts = Account.__table__
conversations = Conversation.__table__
messages = Message.__table__
participants = Participant.__table__
participant_addresses = ParticipantAddress.__table__

_insert_message = insert(messages)
_messages_by_id = select(messages).where(messages.c.id.in_(bindparam("ids", expanding=True)))
_messages_by_provider_id = KeyLookup(messages, ("customer_id", "dedupe_scope", "transaction_id"))
_conversations_by_id = select(conversations).where(conversations.c.id.in_(bindparam("ids", expanding=True)))
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


@dataclass(frozen=True)
class PreparedIngest:
    """An ingest request that passed validation: everything the write needs, nothing it must look up."""

    customer_id: str
    account_id: str | None
    channel: str
    self_addr: tuple[str, str, str]
    peer_addr: tuple[str, str, str]
    text: str
    subject: str
    medias: list[dict[str, object]]
    transaction_id: str
    request_id: str | None
    scope: str  # provider message ids are unique within this (the account, or channel + self address)


Change = tuple[int, Any]


class IngestMethods(Handlers):
    def __init__(self, db: Database, settings: Settings, executor: Executor | None = None) -> None:
        super().__init__(db, settings)
        self._group = GroupCommit(self._write_batch, executor=executor)

    async def IngestMessage(self, request: pb.IngestMessageRequest, caller: Caller) -> pb.IngestMessageResponse:
        """Validate here (errors name the field), then write through group commit."""
        return await self._group.submit(self._prepare(request, caller))

    def _prepare(self, request: pb.IngestMessageRequest, caller: Caller) -> PreparedIngest:
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
            with self.db.read() as conn:
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
        return PreparedIngest(
            customer_id=caller.customer_id,
            account_id=account_id,
            channel=channel,
            self_addr=self_addr,
            peer_addr=peer_addr,
            text=text,
            subject=subject,
            medias=medias,
            transaction_id=transaction_id,
            request_id=request_id,
            scope=account_id or f"{channel}:{self_addr[1]}",
        )

    def _write_batch(self, items: Sequence[PreparedIngest]) -> list[pb.IngestMessageResponse | BaseException]:
        """All items in one transaction; if that fails, each alone so only the culprit fails."""
        if len(items) > 1:
            try:
                return list(self._write(items))
            except Exception:  # retried one by one below, where each error is reported
                pass
        outcomes: list[pb.IngestMessageResponse | BaseException] = []
        for item in items:
            try:
                outcomes.append(self._write_one(item))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    @retry_on_conflict
    def _write_one(self, item: PreparedIngest) -> pb.IngestMessageResponse:
        return self._write([item])[0]

    def _write(self, items: Sequence[PreparedIngest]) -> list[pb.IngestMessageResponse]:
        """One transaction for `items`, with a fixed number of statements per batch, not per item."""
        with self.engine.begin() as conn:
            batch = _Batch(_find_earlier(conn, items))
            fresh = [item for item in items if not any(k in batch.earlier for k in _dedupe_keys(item))]
            rooms = match_rooms(conn, [_room_request(item) for item in fresh], batch.rows)
            responses = [self._apply(item, rooms, batch) for item in items]
            batch.rows.flush(conn)
            append_event_groups(conn, batch.events)
        return responses

    @staticmethod
    def _apply(item: PreparedIngest, rooms: dict[RoomKey, Room], batch: _Batch) -> pb.IngestMessageResponse:
        """Queue one message, its side rows and events on `batch` (or answer a repeat)."""
        keys = _dedupe_keys(item)
        for key in keys:
            if key in batch.earlier:  # stored by an earlier call
                return batch.earlier[key]
            if key in batch.seen:  # a repeat within this very batch
                return _as_duplicate(batch.seen[key])
        self_addr, peer_addr = item.self_addr, item.peer_addr
        room_key = _room_request(item).key
        room = rooms[room_key]
        created = room.created and room_key not in batch.opened  # only the first message opened it
        batch.opened.add(room_key)
        now = now_us()
        message = {
            "id": new_id(),
            "customer_id": item.customer_id,
            "conversation_id": room.row.id,
            "direction": "incoming",
            "status": "done",
            "channel": item.channel,
            "source_type": peer_addr[0],
            "source_target": peer_addr[1],
            "source_name": peer_addr[2],
            "destination_type": self_addr[0],
            "destination_target": self_addr[1],
            "destination_name": self_addr[2],
            "text": item.text,
            "subject": item.subject,
            "medias": item.medias,
            "transaction_id": item.transaction_id or None,
            "dedupe_scope": item.scope,
            "tm_create": now,
            "tm_update": now,
            "tm_delete": None,
        }
        batch.rows.add(_insert_message, message)
        if not created:
            batch.rows.add(
                _mark_peer_active,
                {
                    "room_id": room.row.id,
                    "owner_id": item.customer_id,
                    "peer_type": peer_addr[0],
                    "peer_target": peer_addr[1],
                    "channel": item.channel,
                    "now": now,
                },
            )
        if item.request_id:
            batch.rows.add(
                idempotency.RECORD,
                idempotency.key_row(item.customer_id, "IngestMessage", item.request_id, message["id"]),
            )
        response = pb.IngestMessageResponse(
            message=convert.message(RowValues(message)),
            conversation=convert.conversation(room.row),
            conversation_created=created,
        )
        changes: list[Change] = []
        if created:
            changes.append((event_pb2.EVENT_TYPE_CONVERSATION_CREATED, response.conversation))
            participant = convert.participant(room.peer_participant, [_peer(peer_addr)])
            changes.append((event_pb2.EVENT_TYPE_PARTICIPANT_ADDED, participant))
        changes.append((event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, response.message))
        batch.events.append((item.customer_id, changes))
        for key in keys:
            batch.seen[key] = response
        return response


def _room_request(item: PreparedIngest) -> RoomRequest:
    self_addr, peer_addr = item.self_addr, item.peer_addr
    key = RoomKey(item.customer_id, item.channel, self_addr[0], self_addr[1], peer_addr[0], peer_addr[1])
    return RoomRequest(key, item.account_id, self_name=self_addr[2], peer_name=peer_addr[2])


def _find_earlier(conn: Connection, items: Sequence[PreparedIngest]) -> dict[DedupeKey, pb.IngestMessageResponse]:
    """Duplicates of earlier calls (same request id or provider message id), keyed like _dedupe_keys."""
    by_request = {(i.customer_id, i.request_id) for i in items if i.request_id}
    by_provider = {(i.customer_id, i.scope, i.transaction_id) for i in items if i.transaction_id}
    if not by_request and not by_provider:
        return {}
    found: dict[DedupeKey, Any] = {}
    if by_provider:
        for row in _messages_by_provider_id.fetch(conn, list(by_provider)):
            found[(row.customer_id, "provider", row.dedupe_scope, row.transaction_id)] = row
    if by_request:
        resources = idempotency.lookup_many(conn, "IngestMessage", by_request)
        if resources:
            rows = {r.id: r for r in conn.execute(_messages_by_id, {"ids": list(resources.values())})}
            for (customer_id, request_id), message_id in resources.items():
                message = rows.get(message_id)
                if message is not None and message.customer_id == customer_id:
                    found[(customer_id, "request", request_id)] = message
    if not found:
        return {}
    ids = list({row.conversation_id for row in found.values()})
    rooms = {r.id: convert.conversation(r) for r in conn.execute(_conversations_by_id, {"ids": ids})}
    return {
        key: pb.IngestMessageResponse(
            message=convert.message(row), conversation=rooms[row.conversation_id], duplicate=True
        )
        for key, row in found.items()
    }


DedupeKey = tuple[str, ...]


class _Batch:
    """What one transaction's items queue: rows for executemany, events, and ids already used."""

    def __init__(self, earlier: dict[DedupeKey, pb.IngestMessageResponse]) -> None:
        self.earlier = earlier
        self.opened: set[RoomKey] = set()
        self.rows = DeferredWrites(
            [*PARTICIPANT_INSERTS, _insert_message, idempotency.RECORD, _mark_peer_active]  # parents first
        )
        self.events: list[tuple[str, list[Change]]] = []
        self.seen: dict[DedupeKey, pb.IngestMessageResponse] = {}


def _dedupe_keys(item: PreparedIngest) -> list[DedupeKey]:
    keys: list[DedupeKey] = []
    if item.request_id:
        keys.append((item.customer_id, "request", item.request_id))
    if item.transaction_id:
        keys.append((item.customer_id, "provider", item.scope, item.transaction_id))
    return keys


def _as_duplicate(first: pb.IngestMessageResponse) -> pb.IngestMessageResponse:
    return pb.IngestMessageResponse(message=first.message, conversation=first.conversation, duplicate=True)


def _peer(peer: tuple[str, str, str]) -> RowValues:
    return RowValues({"type": peer[0], "target": peer[1], "target_name": peer[2]})
