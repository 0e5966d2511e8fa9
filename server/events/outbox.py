"""Write events in the same transaction as the change they describe (DESIGN.md invariant 3).

Sequence numbers come from `customers.event_seq`, bumped by an UPDATE in the
writing transaction. The row lock it takes is held until commit, so numbers
are handed out in commit order and without gaps: a reader that saw N and then
reads > N can never miss a transaction that commits late (invariant 4). The
UPDATE runs last in the transaction to keep that lock short.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

from google.protobuf.message import Message
from sqlalchemy import Connection, bindparam, update

from convhub.server.events.wire import length_delimited, varint
from convhub.server.store.bulk import BulkInsert
from convhub.server.store.db import new_id, now_us
from convhub.server.store.doorbell import mark_events_written
from convhub.server.store.models import Customer, Event, table
from convhub.server.store.pg_doorbell import notify_events_written
from convhub.v1 import event_pb2

_customers = table(Customer)
_events = table(Event)

_allocate = (
    update(_customers)
    .where(_customers.c.id == bindparam("customer_id"))
    .values(event_seq=_customers.c.event_seq + bindparam("count"))
    .returning(_customers.c.event_seq)
)
_insert = BulkInsert(_events)

# One change to record: its event type and the resource as it now is.
Change: TypeAlias = tuple[event_pb2.EventType.ValueType, Message]

_RESOURCE_FIELD = {
    "Conversation": "conversation",
    "Message": "message",
    "Account": "account",
    "Participant": "participant",
}

# Which field of each resource names the conversation its event belongs to (accounts belong to none).
_CONVERSATION_FIELD = {"conversation": "id", "message": "conversation_id", "participant": "conversation_id"}


# Per resource type: its Event field's wire tag (length-delimited) and the field naming its conversation.
_RESOURCE_WIRE = {
    type_name: (
        varint(event_pb2.Event.DESCRIPTOR.fields_by_name[field].number << 3 | 2),
        _CONVERSATION_FIELD.get(field),
    )
    for type_name, field in _RESOURCE_FIELD.items()
}

EVENT_TYPE_NAMES = {
    v.number: v.name.removeprefix("EVENT_TYPE_").lower() for v in event_pb2.EventType.DESCRIPTOR.values if v.number
}


def conversation_of(event: event_pb2.Event) -> str | None:
    """The conversation an event belongs to, stored beside it so readers can follow one conversation."""
    field = event.WhichOneof("resource")
    if field not in _CONVERSATION_FIELD:
        return None
    return getattr(getattr(event, field), _CONVERSATION_FIELD[field]) or None


def _field_tag(name: str, wire_type: int) -> bytes:
    return varint(event_pb2.Event.DESCRIPTOR.fields_by_name[name].number << 3 | wire_type)


# The envelope's fields (1-5), written by hand: an Event built, timed and serialized per event cost
# more than the rest of an event's row. Proto3 leaves out zero values; none of these is ever zero
# (ids are UUIDs, sequences start at 1, event types are never UNSPECIFIED), times are after 1970.
_ID, _CUSTOMER_ID, _TM_CREATE = _field_tag("id", 2), _field_tag("customer_id", 2), _field_tag("tm_create", 2)
_SEQUENCE = _field_tag("sequence", 0)
_TYPE = {number: _field_tag("type", 0) + varint(number) for number in EVENT_TYPE_NAMES}


def _timestamp(us: int) -> bytes:
    """A google.protobuf.Timestamp's bytes (seconds = 1, nanos = 2; zeros left out) for `us` microseconds."""
    seconds, micros = divmod(us, 1_000_000)
    body = (b"\x08" + varint(seconds) if seconds else b"") + (b"\x10" + varint(micros * 1000) if micros else b"")
    return length_delimited(_TM_CREATE, body)


def _envelope(event_id: str, customer: bytes, sequence: int, event_type: int, tm_create: bytes) -> bytes:
    """Event{id, customer_id, sequence, type, tm_create} serialized, `customer` and `tm_create` pre-encoded."""
    return (
        length_delimited(_ID, event_id.encode())
        + customer
        + _SEQUENCE
        + varint(sequence)
        + _TYPE[event_type]
        + tm_create
    )


def append_events(conn: Connection, customer_id: str, changes: Sequence[Change]) -> list[int]:
    """Append one event per (EventType, resource) and return their sequence numbers."""
    return append_event_groups(conn, [(customer_id, changes)])


def append_event_groups(conn: Connection, groups: Sequence[tuple[str, Sequence[Change]]]) -> list[int]:
    """Append the events of several writes (possibly of several customers) in one go.

    Each customer's counter is bumped once, customers in id order so that two
    batches never wait on each other's counters in opposite orders (no deadlock).
    """
    per_customer: dict[str, list[Change]] = {}
    for customer_id, changes in groups:
        per_customer.setdefault(customer_id, []).extend(changes)
    rows = []
    # An inbound message is the resource of two events: serialize each resource once. Its fields follow the
    # envelope's (numbers 10+ after 1-5), so envelope + field bytes equal the whole Event's serialization.
    serialized: dict[int, bytes] = {}
    for customer_id in sorted(per_customer):
        changes = per_customer[customer_id]
        if not changes:
            continue
        last = conn.execute(_allocate, {"customer_id": customer_id, "count": len(changes)}).scalar_one()
        first = last - len(changes) + 1
        now = now_us()  # after the counter lock: event times follow sequence order
        customer, tm_create = length_delimited(_CUSTOMER_ID, customer_id.encode()), _timestamp(now)
        for offset, (event_type, resource) in enumerate(changes):
            tag, conversation_field = _RESOURCE_WIRE[resource.DESCRIPTOR.name]
            body = serialized.get(id(resource))
            if body is None:
                body = serialized[id(resource)] = length_delimited(tag, resource.SerializeToString())
            event_id = new_id()
            rows.append(
                {
                    "id": event_id,
                    "customer_id": customer_id,
                    "sequence": first + offset,
                    "type": EVENT_TYPE_NAMES[event_type],
                    "resource_id": getattr(resource, "id"),  # noqa: B009
                    "conversation_id": getattr(resource, conversation_field) or None if conversation_field else None,
                    "payload": _envelope(event_id, customer, first + offset, event_type, tm_create) + body,
                    "tm_create": now,
                }
            )
    if rows:
        _insert(conn, rows)
        mark_events_written(conn)  # rings this process's listeners after the commit
        notify_events_written(conn)  # and, on PostgreSQL, every other process's
    return [row["sequence"] for row in rows]
