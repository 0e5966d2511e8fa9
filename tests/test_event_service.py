"""EventService over gRPC on a real server: ListEvents pages and filters, SubscribeEvents replay+live, tenancy."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from convhub.v1 import conversation_pb2, event_pb2, event_service_pb2
from convhub.v1 import conversation_service_pb2 as cs
from convhub.v1 import conversation_service_pb2_grpc as cs_grpc
from tests.conftest import Hub, Tenant
from tests.eventsupport import EventsApi, head_async, wait_until
from tests.support import rich_error

CREATED = event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED
RECEIVED = event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED
UPDATED = event_pb2.EVENT_TYPE_CONVERSATION_UPDATED


@pytest.fixture
async def aio_channel(hub: Hub) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(hub.grpc_target) as ch:
        yield ch


@pytest.fixture
def api(aio_channel: grpc.aio.Channel, tenant: Tenant) -> EventsApi:
    return EventsApi(aio_channel, tenant.metadata)


async def expect_status(coro: object, code: grpc.StatusCode) -> grpc.RpcError:
    try:
        await coro  # type: ignore[misc]
    except grpc.RpcError as err:
        assert err.code() == code, (err.code(), err.details())
        return err
    raise AssertionError(f"expected {code.name}")


async def test_list_events_walks_pages_in_sequence_order(api: EventsApi) -> None:
    for i in range(4):
        await api.sms(text=f"m{i}")  # 4 + 3 * 2 = 10 events
    seen: list[int] = []
    token = ""
    while True:
        page = await api.list(page_size=3, page_token=token)
        assert len(page.result) <= 3
        seen.extend(e.sequence for e in page.result)
        token = page.next_page_token
        if not token:
            break
    assert seen == list(range(1, 11))
    later = await api.list(after_sequence=7)
    assert [e.sequence for e in later.result] == [8, 9, 10]
    assert later.next_page_token == ""


async def test_list_events_filters_by_type_and_conversation(api: EventsApi, aio_channel: grpc.aio.Channel) -> None:
    first = await api.sms(peer="+15550002001", text="a")
    await api.sms(peer="+15550002002", text="b")
    await api.sms(peer="+15550002001", text="c")
    room = first.conversation.id
    await cs_grpc.ConversationServiceStub(aio_channel).UpdateConversation(
        cs.UpdateConversationRequest(conversation=conversation_pb2.Conversation(id=room, name="n")),
        metadata=api.metadata,
    )

    received = await api.list(event_types=[RECEIVED])
    assert [e.message.text for e in received.result] == ["a", "b", "c"]
    assert all(e.type == RECEIVED for e in received.result)

    in_room = await api.list(conversation_id=room)
    assert {e.WhichOneof("resource") for e in in_room.result} == {"conversation", "participant", "message"}
    assert all(
        room in (e.conversation.id, e.message.conversation_id, e.participant.conversation_id) for e in in_room.result
    )
    assert len(in_room.result) == 4 + 2 + 1  # opened (4), "c" (2), the update

    both = await api.list(conversation_id=room, event_types=[UPDATED, CREATED])
    assert [(e.type, e.message.text) for e in both.result] == [(CREATED, "a"), (CREATED, "c"), (UPDATED, "")]

    # a filtered list pages by the last sequence it returned
    page = await api.list(event_types=[RECEIVED], page_size=2)
    rest = await api.list(event_types=[RECEIVED], page_size=2, page_token=page.next_page_token)
    assert [e.message.text for e in [*page.result, *rest.result]] == ["a", "b", "c"]
    # ...and its token is good for that query only
    err = await expect_status(
        api.list(event_types=[CREATED], page_token=page.next_page_token), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert rich_error(err).fields == ["page_token"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"after_sequence": -1}, "after_sequence"),
        ({"event_types": [999]}, "event_types[0]"),
        ({"event_types": [RECEIVED, 0]}, "event_types[1]"),
        ({"conversation_id": "not-a-uuid"}, "conversation_id"),
        ({"page_size": -1}, "page_size"),
        ({"page_token": "garbage!"}, "page_token"),
    ],
)
async def test_bad_requests_name_the_field(api: EventsApi, fields: dict[str, object], field: str) -> None:
    err = await expect_status(api.list(**fields), grpc.StatusCode.INVALID_ARGUMENT)
    assert rich_error(err).fields == [field]
    if "page" not in field:
        sub = await api.subscribe(**fields)
        await wait_until(lambda: sub.error is not None, 10, "the stream to fail")
        assert sub.error is not None and sub.error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert rich_error(sub.error).fields == [field]


async def test_resuming_after_a_sequence_not_yet_written_is_out_of_range(api: EventsApi) -> None:
    await api.sms()
    err = await expect_status(api.list(after_sequence=99), grpc.StatusCode.OUT_OF_RANGE)
    rich = rich_error(err)
    assert (rich.reason, rich.metadata, rich.fields) == ("SEQUENCE_AHEAD", {"newest_sequence": "4"}, ["after_sequence"])
    sub = await api.subscribe(after=99)
    await wait_until(lambda: sub.error is not None, 10, "the stream to fail")
    assert sub.error is not None and sub.error.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_subscribe_replays_then_continues_live_without_gap_or_duplicate_while_writers_write(
    hub: Hub, tenant: Tenant, api: EventsApi
) -> None:
    """Subscribers join at different points while four writers keep ingesting; each sees its range exactly once."""
    await api.sms(peer="+15550003000", text="before")
    writes_per_writer = 40

    async def writer(w: int) -> None:
        for i in range(writes_per_writer):
            await api.sms(peer=f"+1555000310{w}", text=f"{w}-{i}")

    writers = [asyncio.create_task(writer(w)) for w in range(4)]
    subscribers = [(0, await api.subscribe(after=0))]
    while not all(w.done() for w in writers) and len(subscribers) < 8:
        await asyncio.sleep(0.05)
        now = await head_async(hub.engine, tenant.customer_id)
        subscribers.append((now // 2, await api.subscribe(after=now // 2)))  # replays half, then live
        subscribers.append((-1, await api.subscribe()))  # live from here on
    await asyncio.gather(*writers)
    # One write after every subscriber joined: a live one that joined as the writers finished still gets it.
    await api.sms(peer="+15550003000", text="after")
    final = await head_async(hub.engine, tenant.customer_id)
    assert final == 4 + 4 * 4 + 4 * (writes_per_writer - 1) * 2 + 2
    for after, sub in subscribers:
        await sub.reached(final)
        await sub.close()
        assert sub.error is None
        if after >= 0:
            assert sub.sequences == list(range(after + 1, final + 1))
        else:  # live: a contiguous run up to the end
            assert sub.sequences == list(range(sub.sequences[0], final + 1))
        assert {e.customer_id for e in sub.events} <= {tenant.customer_id}
        assert len({e.id for e in sub.events}) == len(sub.events)
    assert len(subscribers) >= 3


async def test_subscribe_filters_by_type_and_conversation(api: EventsApi) -> None:
    first = await api.sms(peer="+15550004001", text="a")
    room = first.conversation.id
    by_room = await api.subscribe(after=0, conversation_id=room, event_types=[RECEIVED])
    by_type = await api.subscribe(after=0, event_types=[RECEIVED])
    await api.sms(peer="+15550004002", text="b")
    await api.sms(peer="+15550004001", text="c")
    await by_type.reached(max(e.sequence for e in (await api.list()).result))
    await asyncio.sleep(0.3)  # give the room stream time to (wrongly) receive more
    assert [e.message.text for e in by_room.events] == ["a", "c"]
    assert [e.message.text for e in by_type.events] == ["a", "b", "c"]
    for sub in (by_room, by_type):
        await sub.close()


async def test_another_customers_events_never_appear(
    api: EventsApi, aio_channel: grpc.aio.Channel, tenant: Tenant, other_tenant: Tenant
) -> None:
    other = EventsApi(aio_channel, other_tenant.metadata)
    theirs = await other.sms(peer="+15550005001", text="theirs")
    mine_sub = await api.subscribe(after=0)
    theirs_by_room = await api.subscribe(after=0, conversation_id=theirs.conversation.id)
    await api.sms(peer="+15550005002", text="mine")
    await other.sms(peer="+15550005001", text="theirs again")
    await mine_sub.reached(4)
    await asyncio.sleep(0.3)
    assert [e.message.text for e in mine_sub.events if e.type == RECEIVED] == ["mine"]
    assert {e.customer_id for e in mine_sub.events} == {tenant.customer_id}
    assert theirs_by_room.events == []
    listed = await api.list()
    assert "theirs" not in {e.message.text for e in listed.result}
    assert (await api.list(conversation_id=theirs.conversation.id)).result == []
    for sub in (mine_sub, theirs_by_room):
        await sub.close()


async def test_events_that_are_ready_together_travel_in_one_message(api: EventsApi) -> None:
    """A gRPC message costs far more than an event: a replay (or a burst) comes in batches, in order."""
    for i in range(5):
        await api.sms(text=f"m{i}")  # 4 + 4 * 2 = 12 events
    call = api.events.SubscribeEvents(event_service_pb2.SubscribeEventsRequest(after_sequence=0), metadata=api.metadata)
    first = await call.read()
    call.cancel()
    assert [e.sequence for e in first.events] == list(range(1, 13))
