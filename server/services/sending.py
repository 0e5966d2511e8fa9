"""Sending: store an outgoing message and its delivery job in one transaction, then ring the delivery worker.

`send` (SendMessage) goes into an existing open conversation; `send_to_address`
(SendToAddress) matches or opens the room for (channel, self, peer) by the
same rule and unique index as inbound messages, so the person's reply joins
it. Both return at once: the message is `progressing` with delivery status
`queued`, and the delivery worker (channels/delivery.py) takes it from the
job row. The message, its job, the idempotency key and the outbox event
commit together (DESIGN.md invariant 3), so a job never exists without its
message nor a message without its job.

Concurrent sends share one transaction (group commit, as ingest does).
The delivery doorbell is rung after commit by this process; other replicas
find the job on their re-poll timer (a lost ring costs latency, never a message).
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from convhub.server.config import Settings
from convhub.server.domain import inbound, rooms
from convhub.server.domain.addresses import Address
from convhub.server.domain.channel_choice import (
    NoUsableChannel,
    OptedOut,
    Recipient,
    Route,
    SendingAccount,
    choose_routes,
)
from convhub.server.domain.channels import ACCOUNT_CHANNEL
from convhub.server.domain.delivery import QUEUED
from convhub.server.domain.messages import OUTGOING, Media, has_content, initial_status
from convhub.server.domain.violations import RuleViolation
from convhub.server.errors import FailedPrecondition, InvalidArgument
from convhub.server.events.outbox import Change, append_event_groups
from convhub.server.services import resources
from convhub.server.services.errors import found, invalid_argument
from convhub.server.store import accounts, contacts, conversations, delivery_jobs, idempotency, messages, participants
from convhub.server.store.db import Database, new_id, now_us, retry_on_conflict
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.doorbell import Doorbell
from convhub.server.store.faults import classify, is_deadlock
from convhub.server.store.group_commit import GroupCommit
from convhub.server.store.rooms import PARTICIPANT_INSERTS, match_rooms
from convhub.server.store.rows import ConversationRow, ParticipantRow, row_of_values
from convhub.v1 import conversation_pb2, event_pb2, message_pb2

# Send batches written at once on PostgreSQL (each a group commit of its own; see SendingService).
SEND_LANES = 2
SEND_METHOD = "SendMessage"  # request-id namespaces (stored: do not rename)
SEND_TO_ADDRESS_METHOD = "SendToAddress"


@dataclass(frozen=True)
class OutboundMessage:
    """A message to send into an existing conversation."""

    customer_id: str
    conversation_id: str
    text: str = ""
    medias: Sequence[Media] = ()
    request_id: str | None = None
    channel: str | None = None  # explicit channel (stored name); None lets the rule choose
    allow_fallback: bool = False
    subject: str = ""  # email's subject line (other channels ignore it)


@dataclass(frozen=True)
class AddressedMessage:
    """A message to an address, in the open conversation for (channel, self, peer) or a new one.

    Either `account_id` (our account; channel and self default from it) or
    `self_address` with `channel` (or a typed `self_address`) names our side.
    """

    customer_id: str
    peer: Address
    account_id: str | None = None
    self_address: Address | None = None
    channel: str | None = None
    text: str = ""
    medias: Sequence[Media] = ()
    request_id: str | None = None
    subject: str = ""  # email's subject line (other channels ignore it)


@dataclass(frozen=True)
class SentToAddress:
    conversation: conversation_pb2.Conversation
    message: message_pb2.Message
    conversation_created: bool


def sending_accounts(conn: Connection, customer_id: str) -> list[SendingAccount]:
    """The customer's accounts as the channel choice sees them, oldest first."""
    result = []
    for row in accounts.of_customer(conn, customer_id):
        address = Address(row.address_type, row.address_target, row.address_name) if row.address_target else None
        result.append(SendingAccount(row.id, ACCOUNT_CHANNEL[row.type], row.provider, address, bool(row.enabled)))
    return result


class Peers:
    """What the channel choice needs about each room's peer (the person a message goes to), read for many rooms
    at once: a fixed number of statements however many rooms (a send batch reads them once, as ingest reads its
    lookups), instead of three per send.

    The peer's participant is the room's oldest live participant whose contact holds the peer address or whose
    own address rows do (`participants.holding_address`, by the same rule); its addresses and opt-outs are its
    contact's (any conversation may have added them), else its own rows.
    """

    def __init__(self, conn: Connection, rooms_read: Collection[ConversationRow]) -> None:
        rooms_by_id = {room.id: room for room in rooms_read}
        people = participants.live_in_rooms(conn, list(rooms_by_id))
        contact_rows = contacts.addresses_of_many(conn, {p.contact_id for p in people if p.contact_id})
        own_rows = participants.addresses_of_many(conn, [p.id for p in people])
        self._person: dict[str, ParticipantRow | None] = {}
        for room in rooms_by_id.values():
            key = contacts.address_key(room.customer_id, Address(room.peer_type, room.peer_target, room.peer_name))
            self._person[room.id] = next(
                (
                    p
                    for p in people  # oldest first, as holding_address ranks them
                    if p.conversation_id == room.id
                    and (_holds(contact_rows.get(p.contact_id or "", ()), key) or _holds(own_rows.get(p.id, ()), key))
                ),
                None,
            )
        # A peer without a participant (rare): its address's contact, if any.
        unheld = {
            room.id: contacts.address_key(room.customer_id, Address(room.peer_type, room.peer_target))
            for room in rooms_by_id.values()
            if self._person[room.id] is None
        }
        holders = contacts.holders(conn, list(unheld.values())) if unheld else {}
        self._contact_id: dict[str, str | None] = {
            room_id: (person.contact_id if person is not None else holders.get(unheld[room_id]))
            for room_id, person in self._person.items()
        }
        more = {c for c in self._contact_id.values() if c and c not in contact_rows}
        if more:
            contact_rows.update(contacts.addresses_of_many(conn, more))
        self._contacts = contacts.by_ids(conn, {c for c in self._contact_id.values() if c})
        self._contact_rows = contact_rows
        self._own_rows = own_rows

    def recipient(self, room: ConversationRow, account_id: str | None = None) -> Recipient:
        person = self._person[room.id]
        contact_id = self._contact_id[room.id]
        contact = self._contacts.get(contact_id) if contact_id else None
        if contact is not None and contact.customer_id != room.customer_id:
            contact = None  # as contacts.get: never another customer's
        if contact_id:
            address_rows: Sequence[Any] = self._contact_rows.get(contact_id, [])
        elif person is not None:
            address_rows = self._own_rows.get(person.id, [])
        else:
            address_rows = []
        return Recipient(
            room_channel=room.type,
            room_self=Address(room.self_type, room.self_target, room.self_name),
            room_peer=Address(room.peer_type, room.peer_target, room.peer_name),
            room_account_id=account_id or room.account_id,
            addresses=[Address(a.type, a.target, a.target_name) for a in address_rows],
            preferred_channel=person.preferred_channel if person is not None else "",
            last_active_channel=person.last_active_channel if person is not None else "",
            opted_out_channels=frozenset(contact.opted_out_channels or ()) if contact is not None else frozenset(),
        )


def _holds(rows: Iterable[Any], key: contacts.AddressKey) -> bool:
    return any((r.customer_id, r.type, r.target) == key for r in rows)


def routes_for(
    conn: Connection,
    room: ConversationRow,
    *,
    explicit: str | None,
    text: str,
    has_media: bool,
    account_id: str | None = None,
    exclude: Collection[str] = (),
    accounts: Sequence[SendingAccount] | None = None,
    peers: Peers | None = None,
) -> list[Route]:
    """The usable routes for a message into `room`, best first; FAILED_PRECONDITION naming why when none.

    `accounts`, `peers`: the customer's sending accounts and the rooms' peers when the caller has them (a send
    batch reads them once for all its items).
    """
    recipient = (peers if peers is not None else Peers(conn, [room])).recipient(room, account_id)
    try:
        return choose_routes(
            explicit=explicit,
            text=text,
            has_media=has_media,
            recipient=recipient,
            accounts=sending_accounts(conn, room.customer_id) if accounts is None else accounts,
            exclude=exclude,
        )
    except OptedOut as exc:
        raise FailedPrecondition(exc.description, reason="CHANNEL_OPTED_OUT") from None
    except NoUsableChannel as exc:
        raise FailedPrecondition(exc.description, reason="NO_USABLE_CHANNEL") from None


def route_values(route: Route) -> dict[str, Any]:
    """The message columns a route decides (also rewritten when delivery falls back to another route)."""
    return {
        "channel": route.channel,
        "account_id": route.account_id,
        "channel_reason": route.reason,
        "dedupe_scope": route.account_id,  # the provider's message id is unique per account
        "source_type": route.sender.type,
        "source_target": route.sender.target,
        "source_name": route.sender.name,
        "destination_type": route.recipient.type,
        "destination_target": route.recipient.target,
        "destination_name": route.recipient.name,
    }


class SendingService:
    """Sends, written by group commit (store/group_commit.py): concurrent calls share one transaction.

    What dominates a send is per-transaction cost (BEGIN, the event counter
    row, COMMIT, on PostgreSQL the round trips), as for ingest. A batch that
    fails as a whole is written again item by item, so a send fails only for
    its own reasons (a closed room, no usable channel) and never half-written.
    """

    def __init__(self, db: Database, settings: Settings, bell: Doorbell, executor: Executor | None = None) -> None:
        self.db = db
        self.settings = settings
        self.bell = bell  # the delivery worker's doorbell
        # PostgreSQL: a send costs round trips, so several batches are written at once (their transactions meet
        # only at the event counter, taken last). SQLite: one, its writer lock serialises them anyway.
        lanes = 1 if db.backend == "sqlite" else SEND_LANES
        self._groups: list[GroupCommit[OutboundMessage | AddressedMessage, Any]] = [
            GroupCommit(self._write_batch, executor=executor) for _ in range(lanes)
        ]
        self._lane = 0

    def _submit(self, item: OutboundMessage | AddressedMessage) -> Awaitable[Any]:
        self._lane = (self._lane + 1) % len(self._groups)
        return self._groups[self._lane].submit(item)

    async def send(self, out: OutboundMessage) -> message_pb2.Message:
        """Store the message `progressing` with its delivery job, and return it at once."""
        _require_content(out.text, out.medias)
        result: message_pb2.Message = await self._submit(out)
        return result

    async def send_to_address(self, out: AddressedMessage) -> SentToAddress:
        """Match or open the room for (channel, self, peer), store the message and its job, return at once."""
        _require_content(out.text, out.medias)
        result: SentToAddress = await self._submit(out)
        return result

    def _write_batch(self, items: Sequence[OutboundMessage | AddressedMessage]) -> list[Any]:
        """All items in one transaction; if that fails, each alone so only the culprit fails. Rings the
        delivery worker after a commit that queued jobs."""
        if len(items) > 1:
            try:
                results = self._write(items)
            except Exception as exc:  # retried one by one below, where each error is reported
                # The database's doing, not an item's: each would fail alike (a deadlock excepted: alone, each goes).
                if classify(exc) is not None and not is_deadlock(exc):
                    return [exc] * len(items)
            else:
                self.bell.ring()
                return results
        outcomes: list[Any] = []
        for item in items:
            try:
                outcomes.append(self._write_one(item))
            except Exception as exc:
                outcomes.append(exc)
        if not all(isinstance(o, BaseException) for o in outcomes):
            self.bell.ring()
        return outcomes

    @retry_on_conflict
    def _write_one(self, item: OutboundMessage | AddressedMessage) -> Any:
        return self._write([item])[0]

    def _write(self, items: Sequence[OutboundMessage | AddressedMessage]) -> list[Any]:
        """One transaction for `items`. Per batch, not per item: the rooms sent into are read in one statement,
        each customer's accounts once, the messages, jobs and request ids inserted by one executemany each, and
        the events appended once, last (one counter bump)."""
        with self.db.writer.begin() as conn:
            batch = _Batch(conn)
            room_ids = {item.conversation_id for item in items if isinstance(item, OutboundMessage)}
            batch.rooms = conversations.by_ids(conn, room_ids) if room_ids else {}
            batch.peers = Peers(conn, list(batch.rooms.values()))
            results: list[Any] = []
            for item in items:
                if isinstance(item, OutboundMessage):
                    results.append(self._send(batch, item))
                else:
                    results.append(self._send_to_address(batch, item))
            batch.rows.flush(conn)
            append_event_groups(conn, batch.events)
        return results

    def _send(self, batch: _Batch, out: OutboundMessage) -> message_pb2.Message:
        conn = batch.conn
        if out.request_id:
            existing = idempotency.lookup(conn, out.customer_id, SEND_METHOD, out.request_id)
            if existing:
                return resources.message(messages.live.by_id(conn, existing))
        row = batch.rooms.get(out.conversation_id)
        live = row if row is not None and row.customer_id == out.customer_id and row.tm_delete is None else None
        room = found(live, "conversation", out.conversation_id)
        if room.state != rooms.OPEN:
            raise FailedPrecondition(
                f"conversation {room.id} is closed: reopen it, or start a new one with SendToAddress",
                reason="CONVERSATION_CLOSED",
            )
        routes = routes_for(
            conn,
            room,
            explicit=out.channel,
            text=out.text,
            has_media=bool(out.medias),
            accounts=batch.accounts(out.customer_id),
            peers=batch.peers,
        )
        message = _store(
            batch, room, routes[0], out.text, out.medias, allow_fallback=out.allow_fallback, subject=out.subject
        )
        if out.request_id:
            key = idempotency.key_row(out.customer_id, SEND_METHOD, out.request_id, message.id)
            batch.rows.add(idempotency.RECORD, key)
        batch.events.append((out.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, message)]))
        return message

    def _send_to_address(self, batch: _Batch, out: AddressedMessage) -> SentToAddress:
        conn = batch.conn
        if out.request_id:
            existing = idempotency.lookup(conn, out.customer_id, SEND_TO_ADDRESS_METHOD, out.request_id)
            if existing:
                row = messages.live.by_id(conn, existing)
                room_row = conversations.live.by_id(conn, row.conversation_id)
                return SentToAddress(resources.conversation(room_row), resources.message(row), False)
        resolved = self._resolve(conn, out)
        request = rooms.room_request(
            out.customer_id, resolved.channel, out.account_id, resolved.self_address, resolved.peer
        )
        deferred = DeferredWrites(PARTICIPANT_INSERTS)
        person = contacts.ensure_contacts(conn, [(out.customer_id, resolved.peer)])
        room = match_rooms(conn, [request], deferred, {request.key: next(iter(person.values()))})[request.key]
        deferred.flush(conn)
        routes = routes_for(
            conn,
            room.row,
            explicit=resolved.channel,
            text=out.text,
            has_media=bool(out.medias),
            account_id=out.account_id,
            accounts=batch.accounts(out.customer_id),
        )
        message = _store(batch, room.row, routes[0], out.text, out.medias, allow_fallback=False, subject=out.subject)
        if out.request_id:
            key = idempotency.key_row(out.customer_id, SEND_TO_ADDRESS_METHOD, out.request_id, message.id)
            batch.rows.add(idempotency.RECORD, key)
        conversation = resources.conversation(room.row)
        changes: list[Change] = []
        if room.created:
            assert room.peer_participant is not None  # inserted rooms come with their peer
            changes.append((event_pb2.EVENT_TYPE_CONVERSATION_CREATED, conversation))
            changes.append(
                (
                    event_pb2.EVENT_TYPE_PARTICIPANT_ADDED,
                    resources.opened_room_participant(room.peer_participant, resolved.peer),
                )
            )
        changes.append((event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, message))
        batch.events.append((out.customer_id, changes))
        return SentToAddress(conversation, message, room.created)

    def _resolve(self, conn: Connection, out: AddressedMessage) -> inbound.ResolvedInbound:
        """Channel and normalised addresses, by the inbound rules (the same key the peer's reply will have)."""
        account = None
        if out.account_id:
            row = found(accounts.live.get(conn, out.customer_id, out.account_id), "account", out.account_id)
            address = Address(row.address_type, row.address_target, row.address_name) if row.address_target else None
            account = inbound.InboundAccount(row.id, row.type, address)
        channel = out.channel
        if channel is None and account is None and out.self_address is not None and out.self_address.type:
            channel = _CHANNEL_OF_ADDRESS.get(out.self_address.type)
        try:
            if account is None and out.self_address is None:
                raise RuleViolation("self", "is required when no account_id is given")
            if account is None and channel is None:
                raise RuleViolation("channel", "is required when no account_id is given and self has no type")
            return inbound.resolve(
                channel=channel,
                account=account,
                self_address=out.self_address,
                peer=out.peer,
                default_region=self.settings.default_region,
            )
        except RuleViolation as exc:
            raise invalid_argument(exc) from None


_CHANNEL_OF_ADDRESS = {"tel": "message", "line": "line", "email": "email", "webchat": "webchat"}


def _require_content(text: str, medias: Sequence[Media]) -> None:
    if not has_content(text, "", medias):
        raise InvalidArgument("text", "a message needs text or media")


class _Batch:
    """One send batch's transaction: rows inserted at its end, events appended last, lookups shared by its items."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # Parents first. A request id repeated within the batch fails the batch at flush; alone, the second finds
        # the first (retry_on_conflict).
        self.rows = DeferredWrites([messages.INSERT_MESSAGE, delivery_jobs.INSERT_JOB, idempotency.RECORD])
        self.events: list[tuple[str, Sequence[Change]]] = []
        self.rooms: dict[str, ConversationRow] = {}
        self.peers: Peers | None = None  # the peers of the rooms sent into (SendMessage)
        self._accounts: dict[str, list[SendingAccount]] = {}

    def accounts(self, customer_id: str) -> list[SendingAccount]:
        if customer_id not in self._accounts:
            self._accounts[customer_id] = sending_accounts(self.conn, customer_id)
        return self._accounts[customer_id]


def _store(
    batch: _Batch,
    room: ConversationRow,
    route: Route,
    text: str,
    medias: Sequence[Media],
    *,
    allow_fallback: bool,
    subject: str = "",
) -> message_pb2.Message:
    """Queue the outgoing message and its delivery job for the batch's insert; the message as the caller gets it."""
    now = now_us()
    message_id = new_id()
    values: dict[str, Any] = {
        "id": message_id,
        "customer_id": room.customer_id,
        "conversation_id": room.id,
        "direction": OUTGOING,
        "status": initial_status(OUTGOING),
        "text": text,
        "subject": subject,
        "medias": list(medias),
        "transaction_id": None,
        "delivery_status": QUEUED,
        "error_code": "",
        "error_message": "",
        "tm_create": now,
        "tm_update": now,
        "tm_delete": None,
        **route_values(route),
    }
    batch.rows.add(messages.INSERT_MESSAGE, values)
    batch.rows.add(
        delivery_jobs.INSERT_JOB,
        delivery_jobs.job_values(
            job_id=new_id(),
            customer_id=room.customer_id,
            message_id=message_id,
            channel=route.channel,
            account_id=route.account_id,
            allow_fallback=allow_fallback,
            now=now,
        ),
    )
    return resources.message(row_of_values(messages.messages, values))  # as stored: no read-back
