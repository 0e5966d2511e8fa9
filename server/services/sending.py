"""Sending: store an outgoing message and its delivery job in one transaction, then ring the delivery worker.

`send` (SendMessage) goes into an existing open conversation; `send_to_address`
(SendToAddress) matches or opens the room for (channel, self, peer) by the
same rule and unique index as inbound messages, so the person's reply joins
it. Both return at once: the message is `progressing` with delivery status
`queued`, and the delivery worker (channels/delivery.py) takes it from the
job row. The message, its job, the idempotency key and the outbox event
commit together (DESIGN.md invariant 3), so a job never exists without its
message nor a message without its job.

The delivery doorbell is rung after commit by this process; other replicas
find the job on their re-poll timer (a lost ring costs latency, never a message).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
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
from convhub.server.events.outbox import Change, append_events
from convhub.server.services import resources
from convhub.server.services.errors import found, invalid_argument
from convhub.server.store import accounts, contacts, conversations, delivery_jobs, idempotency, messages, participants
from convhub.server.store.db import Database, new_id, now_us, retry_on_conflict
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.doorbell import Doorbell
from convhub.server.store.rooms import PARTICIPANT_INSERTS, match_rooms
from convhub.server.store.rows import ConversationRow
from convhub.v1 import conversation_pb2, event_pb2, message_pb2

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


def routes_for(
    conn: Connection,
    room: ConversationRow,
    *,
    explicit: str | None,
    text: str,
    has_media: bool,
    account_id: str | None = None,
    exclude: Collection[str] = (),
) -> list[Route]:
    """The usable routes for a message into `room`, best first; FAILED_PRECONDITION naming why when none."""
    peer = Address(room.peer_type, room.peer_target, room.peer_name)
    person = participants.holding_address(conn, room.customer_id, room.id, peer)
    # The person's addresses and opt-outs are their contact's (any conversation may have added them).
    contact_id = (
        person.contact_id
        if person is not None
        else contacts.holders(conn, [contacts.address_key(room.customer_id, peer)]).get(
            contacts.address_key(room.customer_id, peer)
        )
    )
    contact = contacts.get(conn, room.customer_id, contact_id) if contact_id else None
    if contact_id:
        address_rows: Sequence[Any] = contacts.addresses_of(conn, contact_id)
    elif person is not None:
        address_rows = participants.addresses_of(conn, person.id)
    else:
        address_rows = []
    recipient = Recipient(
        room_channel=room.type,
        room_self=Address(room.self_type, room.self_target, room.self_name),
        room_peer=peer,
        room_account_id=account_id or room.account_id,
        addresses=[Address(a.type, a.target, a.target_name) for a in address_rows],
        preferred_channel=person.preferred_channel if person is not None else "",
        last_active_channel=person.last_active_channel if person is not None else "",
        opted_out_channels=frozenset(contact.opted_out_channels or ()) if contact is not None else frozenset(),
    )
    try:
        return choose_routes(
            explicit=explicit,
            text=text,
            has_media=has_media,
            recipient=recipient,
            accounts=sending_accounts(conn, room.customer_id),
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
    def __init__(self, db: Database, settings: Settings, bell: Doorbell) -> None:
        self.db = db
        self.settings = settings
        self.bell = bell  # the delivery worker's doorbell

    def send(self, out: OutboundMessage) -> message_pb2.Message:
        """Store the message `progressing` with its delivery job, and return it at once."""
        _require_content(out.text, out.medias)
        result = self._send(out)
        self.bell.ring()
        return result

    @retry_on_conflict
    def _send(self, out: OutboundMessage) -> message_pb2.Message:
        with self.db.writer.begin() as conn:
            if out.request_id:
                existing = idempotency.lookup(conn, out.customer_id, SEND_METHOD, out.request_id)
                if existing:
                    return resources.message(messages.live.by_id(conn, existing))
            room = found(
                conversations.live.get(conn, out.customer_id, out.conversation_id), "conversation", out.conversation_id
            )
            if room.state != rooms.OPEN:
                raise FailedPrecondition(
                    f"conversation {room.id} is closed: reopen it, or start a new one with SendToAddress",
                    reason="CONVERSATION_CLOSED",
                )
            routes = routes_for(conn, room, explicit=out.channel, text=out.text, has_media=bool(out.medias))
            message = _store(
                conn, room, routes[0], out.text, out.medias, allow_fallback=out.allow_fallback, subject=out.subject
            )
            if out.request_id:
                idempotency.record(conn, out.customer_id, SEND_METHOD, out.request_id, message.id)
            append_events(conn, out.customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, message)])
        return message

    def send_to_address(self, out: AddressedMessage) -> SentToAddress:
        """Match or open the room for (channel, self, peer), store the message and its job, return at once."""
        _require_content(out.text, out.medias)
        result = self._send_to_address(out)
        self.bell.ring()
        return result

    @retry_on_conflict
    def _send_to_address(self, out: AddressedMessage) -> SentToAddress:
        with self.db.writer.begin() as conn:
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
            )
            message = _store(conn, room.row, routes[0], out.text, out.medias, allow_fallback=False, subject=out.subject)
            if out.request_id:
                idempotency.record(conn, out.customer_id, SEND_TO_ADDRESS_METHOD, out.request_id, message.id)
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
            append_events(conn, out.customer_id, changes)
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


def _store(
    conn: Connection,
    room: ConversationRow,
    route: Route,
    text: str,
    medias: Sequence[Media],
    *,
    allow_fallback: bool,
    subject: str = "",
) -> message_pb2.Message:
    """Insert the outgoing message and its delivery job; the message as the caller gets it."""
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
    conn.execute(messages.INSERT_MESSAGE, values)
    conn.execute(
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
    return resources.message(messages.live.by_id(conn, message_id))
