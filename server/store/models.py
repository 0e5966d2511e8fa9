"""The schema: typed SQLAlchemy 2 models, the single source Alembic migrations are checked against.

Times are integer microseconds since the Unix epoch (UTC): exact on SQLite and
PostgreSQL alike, so keyset page tokens round-trip without precision loss.
Hot paths query through Core (`Model.__table__`) rather than the ORM unit of work.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ID = String(36)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def table(model: type[Base]) -> Table:
    """A model's Core table, typed as the `Table` it is (`__table__` is declared as a plain FromClause)."""
    return cast(Table, model.__table__)


def predicate_value(value: str) -> ColumnElement[str]:
    """`value`, named by a partial index's predicate below, spelled literally in a query meant to use that index.

    Not a bind parameter: SQLite re-prepares a statement on every execution when a bound value might decide
    whether a partial index applies (0.5 vs 0.09 ms for person_rooms' 16-key statement), and PostgreSQL's
    generic plans cannot use the index at all. Constants only (it is pasted into the SQL).
    """
    if "'" in value:
        raise ValueError(f"not a plain constant: {value!r}")
    return literal_column(f"'{value}'")


class Customer(Base):
    """A tenant. `event_seq` is the last event sequence number handed out (see events/outbox.py)."""

    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255))
    event_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)
    tm_delete: Mapped[int | None] = mapped_column(BigInteger)


class ApiToken(Base):
    """An API token, stored only as its SHA-256 (tokens are 256-bit random, so no slow hash is needed)."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_delete: Mapped[int | None] = mapped_column(BigInteger)


class Account(Base):
    """A channel account. `credentials` is write-only and sealed: Fernet text from store/secrets.py
    (a string map inside), opened only to call the provider; no read path converts it to a proto."""

    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    type: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    address_type: Mapped[str] = mapped_column(String(16), default="")
    address_target: Mapped[str] = mapped_column(String(320), default="")
    address_name: Mapped[str] = mapped_column(String(255), default="")
    credentials: Mapped[str] = mapped_column(Text)
    message_flow_id: Mapped[str] = mapped_column(String(36), default="", server_default="")
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)
    tm_delete: Mapped[int | None] = mapped_column(BigInteger)
    provider: Mapped[str] = mapped_column(String(16), default="", server_default="")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    # Seconds without a message before the sweep closes this account's open rooms; 0: never.
    inactivity_timeout_s: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    # Web chat: the public key a page embeds (not a secret); NULL for other channels.
    widget_key: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("ix_accounts_customer_order", "customer_id", "tm_create", "id"),
        Index("uq_accounts_widget_key", "widget_key", unique=True),
    )


class Conversation(Base):
    """A room: one per open (customer, type, self, peer) - the partial unique index keeps it so."""

    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    account_id: Mapped[str | None] = mapped_column(ID)
    name: Mapped[str] = mapped_column(String(255), default="")
    detail: Mapped[str] = mapped_column(Text, default="")
    type: Mapped[str] = mapped_column(String(16))
    self_type: Mapped[str] = mapped_column(String(16))
    self_target: Mapped[str] = mapped_column(String(320))
    self_name: Mapped[str] = mapped_column(String(255), default="")
    peer_type: Mapped[str] = mapped_column(String(16))
    peer_target: Mapped[str] = mapped_column(String(320))
    peer_name: Mapped[str] = mapped_column(String(255), default="")
    owner_type: Mapped[str] = mapped_column(String(64), default="")
    owner_id: Mapped[str] = mapped_column(String(255), default="")
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    state: Mapped[str] = mapped_column(String(16))
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)
    tm_delete: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_conversations_customer_order", "customer_id", "tm_create", "id"),
        Index(
            "uq_conversations_open_room",
            "customer_id",
            "type",
            "self_target",
            "peer_target",
            unique=True,
            sqlite_where=text("state = 'open' AND tm_delete IS NULL"),
            postgresql_where=text("state = 'open' AND tm_delete IS NULL"),
        ),
    )


class Participant(Base):
    __tablename__ = "participants"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"))
    name: Mapped[str] = mapped_column(String(255), default="")
    preferred_channel: Mapped[str] = mapped_column(String(16), default="")
    last_active_channel: Mapped[str] = mapped_column(String(16), default="")
    tm_last_active: Mapped[int | None] = mapped_column(BigInteger)
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)
    tm_delete: Mapped[int | None] = mapped_column(BigInteger)
    # The person (customer-level contact) this participant is; their addresses are the contact's.
    contact_id: Mapped[str | None] = mapped_column(ID)

    __table_args__ = (
        Index("ix_participants_conversation_order", "conversation_id", "tm_create", "id"),
        Index("ix_participants_contact", "contact_id"),
    )


class ParticipantAddress(Base):
    """One address of a participant; indexed by address so a person can be found across conversations."""

    __tablename__ = "participant_addresses"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    participant_id: Mapped[str] = mapped_column(ForeignKey("participants.id"), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    position: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(320))
    target_name: Mapped[str] = mapped_column(String(255), default="")

    __table_args__ = (Index("ix_participant_addresses_lookup", "customer_id", "type", "target"),)


class Message(Base):
    """A message. (customer, dedupe_scope, transaction_id) is unique: a provider retry stores nothing new."""

    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    conversation_id: Mapped[str] = mapped_column(ForeignKey("conversations.id"))
    direction: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    source_type: Mapped[str] = mapped_column(String(16))
    source_target: Mapped[str] = mapped_column(String(320))
    source_name: Mapped[str] = mapped_column(String(255), default="")
    destination_type: Mapped[str] = mapped_column(String(16))
    destination_target: Mapped[str] = mapped_column(String(320))
    destination_name: Mapped[str] = mapped_column(String(255), default="")
    text: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(String(998), default="")
    medias: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    transaction_id: Mapped[str | None] = mapped_column(String(255))
    dedupe_scope: Mapped[str] = mapped_column(String(400))
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)
    tm_delete: Mapped[int | None] = mapped_column(BigInteger)
    # Incoming: the provider's token for answering this message (LINE's replyToken, usable once, for about
    # a minute). Never returned by any read: it lets whoever holds it speak as the account.
    reply_token: Mapped[str | None] = mapped_column(String(255))
    # Outgoing: the provider's latest report (domain/delivery.py moves it forward only).
    delivery_status: Mapped[str] = mapped_column(String(16), default="", server_default="")
    error_code: Mapped[str] = mapped_column(String(64), default="", server_default="")
    error_message: Mapped[str] = mapped_column(Text, default="", server_default="")
    account_id: Mapped[str | None] = mapped_column(ID)
    channel_reason: Mapped[str] = mapped_column(String(64), default="", server_default="")

    __table_args__ = (
        Index("ix_messages_conversation_order", "conversation_id", "tm_create", "id"),
        Index("uq_messages_provider_id", "customer_id", "dedupe_scope", "transaction_id", unique=True),
        # Email threading: a reply's In-Reply-To/References name our Message-ID, whichever account it came in on.
        Index("ix_messages_customer_transaction", "customer_id", "transaction_id"),
    )


class Event(Base):
    """The outbox: one row per change, written in the change's transaction.

    Keyed by (customer_id, sequence): the order readers resume in. `sequence`
    is gap-free and in commit order per customer (allocated from
    customers.event_seq under the row lock), so a reader resuming from N never
    skips a late commit. `id` is the event's UUID (webhook idempotency key);
    `payload` is the serialized convhub.v1.Event. `conversation_id` is the
    conversation the event belongs to (null for account events), so a reader
    can follow one conversation through an index; `tm_create` is indexed for
    the retention sweep.
    """

    __tablename__ = "events"
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    id: Mapped[str] = mapped_column(ID)
    type: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str] = mapped_column(ID)
    conversation_id: Mapped[str | None] = mapped_column(ID)
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    tm_create: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_events_conversation", "customer_id", "conversation_id", "sequence"),
        Index("ix_events_tm_create", "tm_create"),
    )


class IdempotencyKey(Base):
    """AIP-155 request ids: (customer, method, request_id) -> the resource the first call made."""

    __tablename__ = "idempotency_keys"
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), primary_key=True)
    method: Mapped[str] = mapped_column(String(64), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource_id: Mapped[str] = mapped_column(ID)
    tm_create: Mapped[int] = mapped_column(BigInteger)


class WebhookEndpoint(Base):
    """A customer's webhook URL. `secret` is sealed at rest and never read back by any API read.

    `cursor` is the last event sequence of the customer that the fan-out has
    turned into deliveries for this endpoint; it advances in the transaction
    that inserts them, so each event becomes at most one delivery per endpoint.
    During a rotation grace period `previous_secret` still signs deliveries
    until `previous_secret_expires`.
    """

    __tablename__ = "webhook_endpoints"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    url: Mapped[str] = mapped_column(String(2048))
    description: Mapped[str] = mapped_column(Text, default="")
    event_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_expires: Mapped[int | None] = mapped_column(BigInteger)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled_reason: Mapped[str] = mapped_column(String(255), default="")
    customer_default: Mapped[bool] = mapped_column(Boolean, default=False)
    cursor: Mapped[int] = mapped_column(BigInteger)
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)
    tm_delete: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index("ix_webhook_endpoints_customer_order", "customer_id", "tm_create", "id"),
        Index(
            "uq_webhook_endpoints_customer_default",
            "customer_id",
            unique=True,
            sqlite_where=text("customer_default AND tm_delete IS NULL"),
            postgresql_where=text("customer_default AND tm_delete IS NULL"),
        ),
    )


class WebhookDelivery(Base):
    """One event on its way to one endpoint; (endpoint_id, event_sequence) is unique.

    `body` is the JSON sent, rendered once at fan-out (so a delivery outlives
    event retention). `ordering_key` is the conversation (or other resource)
    the event belongs to; the deliveries of one (endpoint, ordering_key) form a
    chain, and only its `head` (the lowest pending sequence) may be attempted,
    which keeps one conversation's events in order. The head is kept
    explicitly (set at fan-out, passed on when it settles) so that claiming
    needs no anti-join whose plan depends on fresh statistics. A worker holds a
    claim by `locked_by` until `locked_until`; a killed worker's claim expires.
    """

    __tablename__ = "webhook_deliveries"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    endpoint_id: Mapped[str] = mapped_column(ForeignKey("webhook_endpoints.id"))
    event_id: Mapped[str] = mapped_column(ID)
    event_sequence: Mapped[int] = mapped_column(BigInteger)
    event_type: Mapped[str] = mapped_column(String(64))
    ordering_key: Mapped[str] = mapped_column(String(64))
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    head: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    locked_by: Mapped[str | None] = mapped_column(String(64))
    locked_until: Mapped[int | None] = mapped_column(BigInteger)
    last_response_code: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(String(512), default="")
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index("uq_webhook_deliveries_endpoint_event", "endpoint_id", "event_sequence", unique=True),
        Index("ix_webhook_deliveries_endpoint_order", "endpoint_id", "tm_create", "id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("status = 'pending' AND head"),
            postgresql_where=text("status = 'pending' AND head"),
        ),
        Index(
            "ix_webhook_deliveries_pending_chain",
            "endpoint_id",
            "ordering_key",
            "event_sequence",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
    )


class DeliveryJob(Base):
    """One outgoing message's delivery to one recipient: the durable queue the delivery worker claims from.

    `state`: queued -> sending (the claim's commit, before the provider call)
    -> done | failed, or back to queued for a retry or a fallback. A claim is a
    lease: `locked_until` in the future means a worker holds the job; a worker
    killed mid-attempt leaves `sending` with an expired lease, which the next
    claimer treats as an unknown outcome.
    """

    __tablename__ = "delivery_jobs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    message_id: Mapped[str] = mapped_column(ForeignKey("messages.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(16))
    account_id: Mapped[str] = mapped_column(ID)
    allow_fallback: Mapped[bool] = mapped_column(Boolean, default=False)
    tried_channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    attempts: Mapped[int] = mapped_column(BigInteger, default=0)
    next_attempt_at: Mapped[int] = mapped_column(BigInteger)
    locked_until: Mapped[int | None] = mapped_column(BigInteger)
    claimed_by: Mapped[str] = mapped_column(String(128), default="")
    attempt_started_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str] = mapped_column(Text, default="")
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        Index(
            "ix_delivery_jobs_due",
            "next_attempt_at",
            sqlite_where=text("state IN ('queued', 'sending')"),
            postgresql_where=text("state IN ('queued', 'sending')"),
        ),
    )


class Contact(Base):
    """A person of a customer, across conversations: owns addresses and per-channel opt-outs.

    `opted_out_channels` lists the stored channel names (`message`, `email`, ...)
    the person asked not to be sent on (SMS STOP, an unsubscribe link).
    """

    __tablename__ = "contacts"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    name: Mapped[str] = mapped_column(String(255), default="")
    opted_out_channels: Mapped[list[str]] = mapped_column(JSON, default=list)
    tm_create: Mapped[int] = mapped_column(BigInteger)
    tm_update: Mapped[int] = mapped_column(BigInteger)


class ContactAddress(Base):
    """One address of a contact. (customer, type, target) is unique: an address belongs to at most one person."""

    __tablename__ = "contact_addresses"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id"), index=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"))
    position: Mapped[int] = mapped_column(BigInteger)
    type: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(320))
    target_name: Mapped[str] = mapped_column(String(255), default="")

    __table_args__ = (Index("uq_contact_addresses_address", "customer_id", "type", "target", unique=True),)
