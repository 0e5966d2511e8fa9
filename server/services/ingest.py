"""Ingest: match or open the room, store the inbound message, write its events — one shared entry point.

`IngestService.ingest(InboundMessage(...))` is what IngestMessage calls and
what every provider hook calls. Idempotent twice over: a provider message id
already seen in the same dedupe scope (the account, or channel + our address)
and a repeated `request_id` both return the first message and store nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Connection

from convhub.server.config import Settings
from convhub.server.domain import inbound
from convhub.server.domain.addresses import Address
from convhub.server.domain.messages import Media
from convhub.server.domain.opt_outs import SMS_CHANNEL, sms_keyword_opt_out
from convhub.server.domain.rooms import (
    OPEN,
    Candidate,
    Openings,
    PersonRouting,
    RoomKey,
    RoomRequest,
    room_request,
)
from convhub.server.domain.violations import RuleViolation
from convhub.server.events.outbox import Change, append_event_groups
from convhub.server.services import resources
from convhub.server.services.errors import found, invalid_argument
from convhub.server.services.opt_outs import set_contact_opt_out
from convhub.server.store import accounts, contacts, conversations, idempotency, messages
from convhub.server.store.db import Database, RowValues, new_id, now_us, retry_on_conflict
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.faults import classify, is_deadlock
from convhub.server.store.group_commit import GroupCommit
from convhub.server.store.participants import mark_peers_active
from convhub.server.store.rooms import PARTICIPANT_INSERTS, Room, match_rooms
from convhub.server.store.rows import ConversationRow, MessageRow
from convhub.v1 import conversation_pb2, event_pb2, message_pb2

IDEMPOTENCY_METHOD = "IngestMessage"  # the request-id namespace (stored: do not rename)
# Delivery fields of a received message: none apply.
INBOUND_DELIVERY = {"delivery_status": "", "error_code": "", "error_message": "", "channel_reason": ""}


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A message a person sent us, as the API caller or provider hook knows it: plain values, rules not yet applied.

    - `customer_id`: the tenant (from the API token, or the hook's account).
    - `peer`: their address; `self_address`: ours. Types are stored short names
      (`tel`, `line`, `email`, `webchat`; "" = the channel's). Targets may be
      raw (`(555) 123-4567`): ingest normalises them before matching rooms.
    - `account_id`: the customer's account it arrived on (a UUID string); then
      `channel` may be None (the account's) and `self_address` None (the
      account's address). Without an account both are required.
    - `channel`: the conversation type's stored name (`message`, `line`, ...).
    - `provider_message_id`: the provider's id; a repeat within the dedupe scope
      returns the first message (`duplicate=True`) and stores nothing.
    - `request_id`: the caller's AIP-155 id, same effect.
    - `reply_token`: the provider's token for answering it (LINE), stored, never returned.
    Lengths are the caller's to check (api/validation.py limits fit the columns).
    """

    customer_id: str
    peer: Address
    channel: str | None = None
    account_id: str | None = None
    self_address: Address | None = None
    text: str = ""
    subject: str = ""
    medias: Sequence[Media] = ()
    provider_message_id: str = ""
    request_id: str | None = None
    reply_token: str = ""  # the provider's token for answering this message (LINE), kept for the delivery worker
    # The conversation a provider's threading headers point at (email In-Reply-To/References): room rule (a).
    thread_conversation_id: str | None = None
    # Why part of it could not be kept (`media_not_fetched`: channels/media_fetch.py); "" when all is well.
    error_code: str = ""
    error_message: str = ""


@dataclass(frozen=True, slots=True)
class Ingested:
    """What ingest stored (or, for a repeat, had stored the first time)."""

    message: message_pb2.Message
    conversation: conversation_pb2.Conversation
    conversation_created: bool = False  # this message opened the room
    duplicate: bool = False  # a repeat: nothing was written


@dataclass(frozen=True, slots=True)
class _Prepared:
    """An inbound message with the rules applied: everything the write needs, nothing it must look up."""

    message: InboundMessage
    resolved: inbound.ResolvedInbound
    room: RoomRequest


DedupeKey = tuple[str, ...]


class IngestService:
    """Inbound messages, written by group commit: concurrent calls share one transaction (store/group_commit.py).

    Room matching, dedupe, the peer's activity and the outbox events come with
    every call; a batch costs a fixed number of statements, not a number per item.
    """

    def __init__(self, db: Database, settings: Settings, executor: Executor | None = None) -> None:
        self.db = db
        self.settings = settings
        self._group: GroupCommit[_Prepared, Ingested] = GroupCommit(self._write_batch, executor=executor)

    async def ingest(self, message: InboundMessage) -> Ingested:
        """Apply the inbound rules (INVALID_ARGUMENT naming the field, NOT_FOUND for another's account), then write.

        Runs on the event loop: the only read (the account, when one is named)
        is a single indexed statement; the write waits for its batch.
        """
        return await self._group.submit(self._prepare(message))

    def _prepare(self, message: InboundMessage) -> _Prepared:
        try:
            inbound.check_unresolved(
                has_account=message.account_id is not None,
                channel=message.channel,
                self_address=message.self_address,
                text=message.text,
                subject=message.subject,
                medias=message.medias,
            )
            account = self._account(message.customer_id, message.account_id) if message.account_id else None
            resolved = inbound.resolve(
                channel=message.channel,
                account=account,
                self_address=message.self_address,
                peer=message.peer,
                default_region=self.settings.default_region,
            )
        except RuleViolation as exc:
            raise invalid_argument(exc) from None
        room = room_request(
            message.customer_id, resolved.channel, message.account_id, resolved.self_address, resolved.peer
        )
        return _Prepared(message, resolved, room)

    def _account(self, customer_id: str, account_id: str) -> inbound.InboundAccount:
        with self.db.read() as conn:
            row = accounts.live.get(conn, customer_id, account_id)
        account = found(row, "account", account_id)
        address = (
            Address(account.address_type, account.address_target, account.address_name)
            if account.address_target
            else None
        )
        return inbound.InboundAccount(account.id, account.type, address)

    def _write_batch(self, items: Sequence[_Prepared]) -> list[Ingested | BaseException]:
        """All items in one transaction; if that fails, each alone so only the culprit fails."""
        if len(items) > 1:
            try:
                return list(self._write(items))
            except Exception as exc:  # retried one by one below, where each error is reported
                # The database's doing, not an item's: each would fail alike. A deadlock is the exception:
                # another replica's batch met ours crosswise, and each item alone goes through.
                if classify(exc) is not None and not is_deadlock(exc):
                    return [exc] * len(items)
        outcomes: list[Ingested | BaseException] = []
        for item in items:
            try:
                outcomes.append(self._write_one(item))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes

    @retry_on_conflict
    def _write_one(self, item: _Prepared) -> Ingested:
        return self._write([item])[0]

    def _write(self, items: Sequence[_Prepared]) -> list[Ingested]:
        """One transaction for `items`, with a fixed number of statements per batch, not per item."""
        with self.db.writer.begin() as conn:
            batch = _Batch(_find_earlier(conn, items))
            fresh = [item for item in items if not any(k in batch.earlier for k in _dedupe_keys(item))]
            rooms = _route_rooms(conn, fresh, batch.rows)
            results = [_apply(item, rooms, batch) for item in items]
            batch.rows.flush(conn)
            append_event_groups(conn, batch.events)
            for customer_id, contact_id, opted_out in batch.opt_outs:
                set_contact_opt_out(conn, customer_id, contact_id, SMS_CHANNEL, opted_out)
        return results


@dataclass(frozen=True, slots=True)
class _Routed:
    """Where one fresh message goes: its room and the person who sent it."""

    room: Room
    contact_id: str
    key: RoomKey | None  # set when the room came from the key rule (c): openings are claimed by key


def _route_rooms(conn: Connection, fresh: Sequence[_Prepared], deferred: DeferredWrites) -> dict[int, _Routed]:
    """Rules a-c of domain/rooms.py for a batch, keyed by id(item): one person lookup, then the key rule's statements.

    Statements per batch: the person lookup (contacts.person_rooms); a
    conversation read only when some message names a thread; contact inserts
    only for addresses never seen; match_rooms only for keys that rule c serves.
    """
    if not fresh:
        return {}
    peer_keys = [contacts.address_key(i.message.customer_id, i.resolved.peer) for i in fresh]
    people = contacts.person_rooms(conn, peer_keys)
    unknown = [
        (i.message.customer_id, i.resolved.peer) for i, k in zip(fresh, peer_keys, strict=True) if k not in people
    ]
    new_contacts = contacts.ensure_contacts(conn, unknown, known_missing=True) if unknown else {}
    rows: dict[str, ConversationRow] = {}
    candidates: dict[str, list[Candidate]] = {}
    several = [row for person in people.values() if len(person.rooms) > 1 for row in person.rooms]
    activity = contacts.activity(conn, several) if several else {}  # rule b's ranking, needed only then
    for person in people.values():
        for row in person.rooms:
            rows[row.id] = row
        candidates[person.contact_id] = [Candidate(activity.get(row.id, 0), row.id) for row in person.rooms]
    thread_ids = {i.message.thread_conversation_id for i in fresh if i.message.thread_conversation_id}
    threads = {
        row.id: row
        for row in (conversations.by_ids(conn, thread_ids) if thread_ids else {}).values()
        if row.state == OPEN and row.tm_delete is None
    }
    rows.update(threads)
    routing = PersonRouting(candidates)
    targets: list[tuple[_Prepared, str, str | RoomKey]] = []
    for item, key in zip(fresh, peer_keys, strict=True):
        contact_id = people[key].contact_id if key in people else new_contacts[key]
        thread = threads.get(item.message.thread_conversation_id or "")
        thread_id = thread.id if thread is not None and thread.customer_id == item.message.customer_id else None
        targets.append((item, contact_id, routing.route(contact_id, thread_id, item.room.key)))
    # A key target is always first set by a message routed to its own key (later ones may follow it).
    openers = [(item, contact_id) for item, contact_id, target in targets if target == item.room.key]
    requests = {item.room.key: item.room for item, _ in openers}
    by_key = {item.room.key: contact_id for item, contact_id in openers}
    rooms = match_rooms(conn, list(requests.values()), deferred, by_key, expect_new=True) if requests else {}
    routed: dict[int, _Routed] = {}
    for item, contact_id, target in targets:
        if isinstance(target, RoomKey):
            routed[id(item)] = _Routed(rooms[target], contact_id, target)
        else:
            routed[id(item)] = _Routed(Room(rows[target], False, None), contact_id, None)
    return routed


class _Batch:
    """What one transaction's items queue: rows for executemany, events, and ids already used."""

    def __init__(self, earlier: dict[DedupeKey, Ingested]) -> None:
        self.earlier = earlier
        self.openings = Openings()
        self.rows = DeferredWrites(
            [*PARTICIPANT_INSERTS, messages.INSERT_MESSAGE, idempotency.RECORD, mark_peers_active]  # parents first
        )
        self.events: list[tuple[str, list[Change]]] = []
        self.seen: dict[DedupeKey, Ingested] = {}
        self.opt_outs: list[tuple[str, str, bool]] = []  # (customer, contact, opted out) from SMS keywords
        # Each room's Conversation, built once per batch: its messages share it (read-only, like _find_earlier's).
        self.conversations: dict[str, conversation_pb2.Conversation] = {}


def _apply(item: _Prepared, rooms: dict[int, _Routed], batch: _Batch) -> Ingested:
    """Queue one message, its side rows and events on `batch` (or answer a repeat)."""
    keys = _dedupe_keys(item)
    for key in keys:
        if key in batch.earlier:  # stored by an earlier call
            return batch.earlier[key]
        if key in batch.seen:  # a repeat within this very batch
            first = batch.seen[key]
            return Ingested(first.message, first.conversation, duplicate=True)
    inbound_message, resolved = item.message, item.resolved
    customer_id = inbound_message.customer_id
    self_address, peer = resolved.self_address, resolved.peer
    routed = rooms[id(item)]
    room = routed.room
    created = routed.key is not None and batch.openings.claim(routed.key, inserted=room.created)
    now = now_us()
    message = {
        "id": new_id(),
        "customer_id": customer_id,
        "conversation_id": room.row.id,
        "direction": resolved.direction,
        "status": resolved.status,
        "channel": resolved.channel,
        "source_type": peer.type,
        "source_target": peer.target,
        "source_name": peer.name,
        "destination_type": self_address.type,
        "destination_target": self_address.target,
        "destination_name": self_address.name,
        "text": inbound_message.text,
        "subject": inbound_message.subject,
        "medias": list(inbound_message.medias),
        "transaction_id": inbound_message.provider_message_id or None,
        "dedupe_scope": resolved.dedupe_scope,
        "tm_create": now,
        "tm_update": now,
        "tm_delete": None,
        "reply_token": inbound_message.reply_token or None,
        **INBOUND_DELIVERY,
        "error_code": inbound_message.error_code,
        "error_message": inbound_message.error_message,
        "account_id": inbound_message.account_id,
    }
    batch.rows.add(messages.INSERT_MESSAGE, message)
    if not created:
        batch.rows.add(
            mark_peers_active,
            {
                "room_id": room.row.id,
                "peer_contact_id": routed.contact_id,
                "channel": resolved.channel,
                "now": now,
            },
        )
    if inbound_message.request_id:
        batch.rows.add(
            idempotency.RECORD,
            idempotency.key_row(customer_id, IDEMPOTENCY_METHOD, inbound_message.request_id, str(message["id"])),
        )
    conversation = batch.conversations.get(room.row.id)
    if conversation is None:
        conversation = batch.conversations[room.row.id] = resources.conversation(room.row)
    result = Ingested(
        message=resources.message(cast("MessageRow", RowValues(message))),
        conversation=conversation,
        conversation_created=created,
    )
    changes: list[Change] = []
    if created:
        assert room.peer_participant is not None  # inserted rooms come with their peer
        changes.append((event_pb2.EVENT_TYPE_CONVERSATION_CREATED, result.conversation))
        participant = resources.opened_room_participant(room.peer_participant, peer)
        changes.append((event_pb2.EVENT_TYPE_PARTICIPANT_ADDED, participant))
    changes.append((event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, result.message))
    changes.append((event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED, result.message))  # every inbound one
    batch.events.append((customer_id, changes))
    if resolved.channel == SMS_CHANNEL:
        opted_out = sms_keyword_opt_out(inbound_message.text)
        if opted_out is not None:
            batch.opt_outs.append((customer_id, routed.contact_id, opted_out))
    for key in keys:
        batch.seen[key] = result
    return result


def _find_earlier(conn: Connection, items: Sequence[_Prepared]) -> dict[DedupeKey, Ingested]:
    """Duplicates of earlier calls (same request id or provider message id), keyed like _dedupe_keys."""
    by_request = {(i.message.customer_id, i.message.request_id) for i in items if i.message.request_id}
    by_provider = [
        (i.message.customer_id, i.resolved.dedupe_scope, i.message.provider_message_id)
        for i in items
        if i.message.provider_message_id
    ]
    if not by_request and not by_provider:
        return {}
    found: dict[DedupeKey, MessageRow] = {}
    if by_provider:
        for row in messages.by_provider_ids(conn, list(dict.fromkeys(by_provider))):
            assert row.transaction_id is not None
            found[(row.customer_id, "provider", row.dedupe_scope, row.transaction_id)] = row
    if by_request:
        resources_by_key = idempotency.lookup_many(conn, IDEMPOTENCY_METHOD, by_request)
        if resources_by_key:
            rows = messages.by_ids(conn, resources_by_key.values())
            for (customer_id, request_id), message_id in resources_by_key.items():
                message = rows.get(message_id)
                if message is not None and message.customer_id == customer_id:
                    found[(customer_id, "request", request_id)] = message
    if not found:
        return {}
    rooms = {
        room_id: resources.conversation(row)
        for room_id, row in conversations.by_ids(conn, {row.conversation_id for row in found.values()}).items()
    }
    return {
        key: Ingested(resources.message(row), rooms[row.conversation_id], duplicate=True) for key, row in found.items()
    }


def _dedupe_keys(item: _Prepared) -> list[DedupeKey]:
    message = item.message
    keys: list[DedupeKey] = []
    if message.request_id:
        keys.append((message.customer_id, "request", message.request_id))
    if message.provider_message_id:
        keys.append((message.customer_id, "provider", item.resolved.dedupe_scope, message.provider_message_id))
    return keys
