"""The outbox: every change commits with its event; sequences are gap-free and in commit order."""

from __future__ import annotations

import threading

import grpc
import pytest
from sqlalchemy import select

from convhub.server.events.outbox import append_events
from convhub.server.store.customers import create_customer
from convhub.server.store.models import Event
from convhub.v1 import account_pb2, conversation_pb2, event_pb2, message_pb2, participant_pb2
from convhub.v1 import conversation_service_pb2 as cs
from tests.conftest import Hub, Tenant
from tests.support import Api

events = Event.__table__


def event_log(hub: Hub, customer_id: str) -> list[event_pb2.Event]:
    with hub.engine.connect() as conn:
        payloads = conn.execute(
            select(events.c.payload).where(events.c.customer_id == customer_id).order_by(events.c.sequence)
        ).scalars()
        return [event_pb2.Event.FromString(p) for p in payloads]


@pytest.fixture
def api(channel: grpc.Channel, tenant: Tenant) -> Api:
    return Api.for_tenant(channel, tenant.metadata)


def test_each_change_writes_its_event_with_the_resource_after_the_change(hub: Hub, tenant: Tenant, api: Api) -> None:
    first = api.sms(text="hi")
    api.sms(text="again")
    room = first.conversation.id
    api.conversations.UpdateConversation(
        cs.UpdateConversationRequest(conversation=conversation_pb2.Conversation(id=room, name="renamed"))
    )
    api.conversations.DeleteMessage(cs.DeleteMessageRequest(conversation_id=room, id=first.message.id))
    api.conversations.DeleteConversation(cs.DeleteConversationRequest(id=room))
    log = event_log(hub, tenant.customer_id)
    assert [event_pb2.EventType.Name(e.type) for e in log] == [
        "EVENT_TYPE_CONVERSATION_CREATED",
        "EVENT_TYPE_PARTICIPANT_ADDED",
        "EVENT_TYPE_CONVERSATION_MESSAGE_CREATED",
        "EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED",
        "EVENT_TYPE_CONVERSATION_MESSAGE_CREATED",
        "EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED",
        "EVENT_TYPE_CONVERSATION_UPDATED",
        "EVENT_TYPE_CONVERSATION_MESSAGE_DELETED",
        "EVENT_TYPE_CONVERSATION_DELETED",
    ]
    assert [e.sequence for e in log] == list(range(1, 10))
    assert all(e.customer_id == tenant.customer_id for e in log)
    assert log[0].conversation == first.conversation
    assert log[2].message == first.message
    assert log[3].message == first.message  # received: the inbound message itself
    assert log[6].conversation.name == "renamed"
    assert log[7].message.HasField("tm_delete")
    # every event of the conversation is filed under it, so readers can follow one conversation
    with hub.engine.connect() as conn:
        filed = conn.execute(
            select(events.c.conversation_id).where(events.c.customer_id == tenant.customer_id)
        ).scalars()
        assert set(filed) == {room}


def test_rejected_changes_write_no_event(hub: Hub, tenant: Tenant, api: Api) -> None:
    room = api.sms().conversation.id
    n = len(event_log(hub, tenant.customer_id))
    with pytest.raises(grpc.RpcError):
        api.conversations.UpdateConversation(
            cs.UpdateConversationRequest(conversation=conversation_pb2.Conversation(id=room, name="x" * 1000))
        )
    assert len(event_log(hub, tenant.customer_id)) == n


def test_concurrent_writers_get_gap_free_sequences_in_commit_order(hub: Hub) -> None:
    customer_id = create_customer(hub.engine, "seq")
    resource = conversation_pb2.Conversation(id="00000000-0000-4000-8000-000000000001")
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for _ in range(25):
                with hub.engine.begin() as conn:
                    append_events(conn, customer_id, [(event_pb2.EVENT_TYPE_CONVERSATION_UPDATED, resource)] * 2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with hub.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.sequence, events.c.tm_create)
            .where(events.c.customer_id == customer_id)
            .order_by(events.c.sequence)
        ).all()
    assert [r.sequence for r in rows] == list(range(1, 201))
    # numbers were handed out in commit order, so they also follow write time
    assert [r.tm_create for r in rows] == sorted(r.tm_create for r in rows)


def test_stored_payloads_are_the_whole_events_serialization_with_a_shared_resource_serialized_once(hub: Hub) -> None:
    """The outbox writes envelope bytes + the resource's field bytes (a resource of two events serialized once):
    that must equal serializing the whole Event, for every resource type, and keep the conversation column."""
    customer_id = create_customer(hub.engine, "payload")
    conversation_id = "00000000-0000-4000-8000-0000000000c1"
    message_id = "00000000-0000-4000-8000-0000000000e1"
    message = message_pb2.Message(id=message_id, conversation_id=conversation_id, text="x" * 200)
    message.tm_create.FromMicroseconds(1_700_000_000_000_000)
    changes = [
        (event_pb2.EVENT_TYPE_CONVERSATION_CREATED, conversation_pb2.Conversation(id=conversation_id)),
        (event_pb2.EVENT_TYPE_PARTICIPANT_ADDED, participant_pb2.Participant(id="p1", conversation_id=conversation_id)),
        (event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, message),
        (event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED, message),
        (event_pb2.EVENT_TYPE_ACCOUNT_CREATED, account_pb2.Account(id="00000000-0000-4000-8000-0000000000a1")),
        (event_pb2.EVENT_TYPE_ACCOUNT_UPDATED, account_pb2.Account()),  # an empty resource is still "set"
    ]
    with hub.engine.begin() as conn:
        append_events(conn, customer_id, changes)
    with hub.engine.connect() as conn:
        rows = conn.execute(
            select(events.c.payload, events.c.conversation_id, events.c.type)
            .where(events.c.customer_id == customer_id)
            .order_by(events.c.sequence)
        ).all()
    assert len(rows) == len(changes)
    for row, (event_type, resource) in zip(rows, changes, strict=True):
        event = event_pb2.Event.FromString(row.payload)
        assert event.type == event_type
        assert event.WhichOneof("resource") == resource.DESCRIPTOR.name.lower()
        assert getattr(event, event.WhichOneof("resource")) == resource
        assert event.SerializeToString() == row.payload  # byte for byte what serializing the whole Event gives
        expected_conversation = None if resource.DESCRIPTOR.name == "Account" else conversation_id
        assert row.conversation_id == expected_conversation


def test_an_event_payload_is_byte_for_byte_the_protobuf_serialization_of_its_event(hub: Hub) -> None:
    """The outbox writes the envelope by hand (events/outbox.py): its bytes must be what protobuf itself writes,
    for any time (whole seconds, micro- and nanosecond parts) and every resource type."""
    customer_id = create_customer(hub.engine, "payload-bytes")
    message = message_pb2.Message(id="m-1", conversation_id="c-1", text="hi")
    changes = [
        (event_pb2.EVENT_TYPE_CONVERSATION_CREATED, conversation_pb2.Conversation(id="c-1", name="room")),
        (event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED, message),
        (event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED, message),
        (event_pb2.EVENT_TYPE_ACCOUNT_CREATED, account_pb2.Account(id="a-1")),
        (event_pb2.EVENT_TYPE_PARTICIPANT_ADDED, participant_pb2.Participant(id="p-1", conversation_id="c-1")),
    ]
    with hub.engine.begin() as conn:
        append_events(conn, customer_id, changes)
    with hub.engine.connect() as conn:
        rows = conn.execute(select(events).where(events.c.customer_id == customer_id).order_by(events.c.sequence))
        stored = rows.all()
    assert [row.sequence for row in stored] == [1, 2, 3, 4, 5]
    for row, (event_type, resource) in zip(stored, changes, strict=True):
        expected = event_pb2.Event(id=row.id, customer_id=customer_id, sequence=row.sequence, type=event_type)
        expected.tm_create.FromMicroseconds(row.tm_create)
        getattr(expected, resource.DESCRIPTOR.name.lower()).CopyFrom(resource)
        assert row.payload == expected.SerializeToString()
    # Times whose parts are zero are left out by protobuf, and must be by hand too.
    from convhub.server.events import outbox

    for us in (1_000_000, 1_700_000_000_000_001, 1_700_000_000_999_999, 5):
        stamp = event_pb2.Event()
        stamp.tm_create.FromMicroseconds(us)
        assert outbox._timestamp(us) == stamp.SerializeToString(), us
