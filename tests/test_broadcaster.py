"""The broadcaster in-process on a SQLite file: one read per wake-up for all subscribers, and the replay seam."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy

from convhub.server.events import broadcaster as broadcaster_module
from convhub.server.events.broadcaster import Broadcaster, EventFilter, Subscription
from convhub.server.events.outbox import append_events
from convhub.server.events.stream import EventReader
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database, new_id
from convhub.v1 import conversation_pb2, event_pb2, event_service_pb2, message_pb2

UPDATED = event_pb2.EVENT_TYPE_CONVERSATION_UPDATED
MESSAGE = event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_CREATED


@pytest.fixture
def db(local_db: Database) -> Database:
    return local_db


@pytest.fixture
async def broadcaster(db: Database) -> AsyncIterator[Broadcaster]:
    b = Broadcaster(db, poll_interval=0.05, buffer_size=5)
    await b.start()
    yield b
    await b.stop()


def write(
    db: Database, customer_id: str, count: int, conversation_id: str | None = None, per_tx: int = 1, pause: float = 0
) -> None:
    room = conversation_pb2.Conversation(id=conversation_id or new_id())
    for _ in range(0, count, per_tx):
        with db.writer.begin() as conn:
            append_events(conn, customer_id, [(UPDATED, room)] * per_tx)
        time.sleep(pause)


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The cursors of every broadcaster read from now on, one entry per statement."""
    reads: list[Any] = []
    real = broadcaster_module.event_log.read_feeds

    def counting(*args: Any, **kwargs: Any) -> Any:
        reads.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(broadcaster_module.event_log, "read_feeds", counting)
    return reads


async def test_one_read_per_wake_up_however_many_subscribers(
    db: Database, broadcaster: Broadcaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = [create_customer(db.writer, f"c{i}") for i in range(2)]
    rooms = [new_id() for _ in range(4)]
    subs: list[tuple[str, str | None, Subscription]] = []
    for i in range(200):
        customer, room = customers[i % 2], (rooms[i % 4] if i % 3 else None)
        subs.append((customer, room, broadcaster.subscribe(customer, 0, EventFilter(conversation_id=room))))
    reads = count_reads(monkeypatch)
    write(db, customers[0], 3, rooms[0], per_tx=3)  # one commit, one ring
    for customer, room, sub in subs:
        if customer == customers[0] and room in (None, rooms[0]):
            got = await asyncio.wait_for(sub.take(), 5)
            assert [e.sequence for e in got] == [1, 2, 3]
    assert len(reads) == 1, "one statement for 200 subscribers of 2 customers"
    assert set(reads[0]) == set(customers)
    for customer, room, sub in subs:  # the others got nothing
        if customer != customers[0] or room not in (None, rooms[0]):
            assert not sub._buffer


async def test_a_subscriber_whose_buffer_overflows_while_replaying_replays_again_and_misses_nothing(
    db: Database, broadcaster: Broadcaster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Buffer of 5, a 600-event backlog and a writer still writing: the buffer overflows during the replay.

    When the replay reaches the end of the table it finds the buffer overflowed, empties it and replays
    again from where it was, then goes live: every event once, in order. (The writer stops once that
    happened, so the live part stays within the small buffer.)
    """
    customer = create_customer(db.writer, "busy")
    write(db, customer, 600, per_tx=50)
    restarted = threading.Event()
    real_restart = Subscription.restart

    def spying(self: Subscription) -> bool:
        overflowed = real_restart(self)
        if overflowed:
            restarted.set()
        return overflowed

    def keep_writing() -> None:
        # Until the overflow happened (bounded in time, not in count: on a loaded machine the replay
        # may take longer than any fixed number of writes).
        deadline = time.monotonic() + 20
        while not restarted.is_set() and time.monotonic() < deadline:
            write(db, customer, 3, per_tx=3, pause=0.002)

    monkeypatch.setattr(Subscription, "restart", spying)
    # Reads at once on every ring: a coalesced read may bring more than this tiny buffer holds of
    # what the replay already sent, overflowing the subscriber once live.
    monkeypatch.setattr(broadcaster_module, "BUSY_INTERVAL", 0)
    monkeypatch.setattr(broadcaster_module, "HEAVY_INTERVAL", 0)
    writer = threading.Thread(target=keep_writing)
    stream = EventReader(db, broadcaster).subscribe(customer, 0, EventFilter())
    got: list[int] = []

    async def consume() -> None:
        async for batch in stream:
            got.extend(event.sequence for event in batch)
            if batch[-1].event.type == MESSAGE:  # the end marker
                return
            if not restarted.is_set():
                await asyncio.sleep(0.002)  # let the broadcaster run meanwhile

    writer.start()
    consumer = asyncio.create_task(consume())
    await asyncio.to_thread(writer.join)
    with db.writer.begin() as conn:
        [marker] = append_events(conn, customer, [(MESSAGE, message_pb2.Message(id=new_id()))])
    await asyncio.wait_for(consumer, 30)
    await stream.aclose()  # type: ignore[attr-defined]
    assert restarted.is_set(), "the buffer overflowed during the replay (else this test proves nothing)"
    assert got == list(range(1, marker + 1))
    assert broadcaster.subscriber_count == 0


async def test_stop_ends_every_subscription(db: Database, broadcaster: Broadcaster) -> None:
    customer = create_customer(db.writer, "stopping")
    sub = broadcaster.subscribe(customer, 0, EventFilter())
    waiting = asyncio.ensure_future(sub.take())
    await asyncio.sleep(0)
    await broadcaster.stop()
    with pytest.raises(broadcaster_module.SubscriptionEnded) as ended:
        await asyncio.wait_for(waiting, 5)
    assert not ended.value.too_slow


async def test_types_filter_and_message_conversation(db: Database, broadcaster: Broadcaster) -> None:
    customer = create_customer(db.writer, "filters")
    room = new_id()
    only_messages = broadcaster.subscribe(customer, 0, EventFilter(types=frozenset({"conversation_message_created"})))
    with db.writer.begin() as conn:
        append_events(
            conn,
            customer,
            [
                (UPDATED, conversation_pb2.Conversation(id=room)),
                (MESSAGE, message_pb2.Message(id=new_id(), conversation_id=room)),
            ],
        )
    got = await asyncio.wait_for(only_messages.take(), 5)
    assert [(e.sequence, e.event.message.conversation_id) for e in got] == [(2, room)]


async def test_stop_returns_even_when_a_ring_races_the_cancel(db: Database) -> None:
    """On Python 3.11 `wait_for` may swallow a cancel that lands as the doorbell wait completes."""
    customer = create_customer(db.writer, "racing")
    for turns in range(60):
        b = Broadcaster(db, poll_interval=30, buffer_size=5)
        await b.start()
        b.subscribe(customer, 0, EventFilter())  # someone listens: the ring reaches the broadcaster
        await asyncio.sleep(0.01)  # the loop read once and waits on the doorbell
        db.doorbell.ring()
        for _ in range(turns % 4):
            await asyncio.sleep(0)
        stopping = asyncio.ensure_future(b.stop())
        done, _ = await asyncio.wait({stopping}, timeout=5)
        assert done, f"stop() hung (ring {turns % 4} loop turns before the cancel)"


async def test_without_subscribers_commits_do_not_wake_the_broadcaster(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each commit rings; a broadcaster nobody subscribed to must not wake for it (ingest pays for every wake-up).
    The first subscriber turns the doorbell on and is served at once, rings it missed included."""
    customer = create_customer(db.writer, "idle")
    b = Broadcaster(db, poll_interval=30, buffer_size=50)  # no re-poll tick within the test
    polls: list[int] = []
    real_poll = b._poll

    async def counting_poll() -> tuple[int, bool]:
        polls.append(len(b._feeds))
        return await real_poll()

    monkeypatch.setattr(b, "_poll", counting_poll)
    await b.start()
    try:
        await asyncio.sleep(0.05)
        polls.clear()  # the first pass at start
        write(db, customer, 5, pause=0.005)
        await asyncio.sleep(0.1)
        assert polls == [], "woken by commits with nobody subscribed"
        sub = b.subscribe(customer, 0, EventFilter())  # from the start: the 5 events rang nobody
        got = await asyncio.wait_for(sub.take(), 2)
        assert [e.sequence for e in got] == [1, 2, 3, 4, 5]
        write(db, customer, 1)
        got = await asyncio.wait_for(sub.take(), 2)  # rung, not polled (the tick is 30 s away)
        assert [e.sequence for e in got] == [6]
        b.unsubscribe(sub)
        await asyncio.sleep(0.05)
        polls.clear()
        write(db, customer, 3, pause=0.005)
        await asyncio.sleep(0.1)
        assert polls == [], "still hearing the doorbell after the last subscriber left"
    finally:
        await b.stop()


async def test_a_subscriber_from_now_on_reads_nothing_when_its_customer_is_followed_already(
    db: Database, broadcaster: Broadcaster
) -> None:
    """The feed's cursor is the head: a reconnect storm of a thousand UI tabs costs no statement each."""
    customer = create_customer(db.writer, "followed")
    write(db, customer, 2)
    reader = EventReader(db, broadcaster)
    first = reader.subscribe(customer, None, EventFilter())
    first_next = asyncio.ensure_future(anext(first))
    await asyncio.sleep(0.2)  # registered, head read from the table
    statements: list[str] = []

    def counting(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    sqlalchemy.event.listen(db.reader, "before_cursor_execute", counting)
    second = reader.subscribe(customer, None, EventFilter())
    second_next = asyncio.ensure_future(anext(second))
    await asyncio.sleep(0)  # runs up to its first wait for an event
    await asyncio.sleep(0)
    sqlalchemy.event.remove(db.reader, "before_cursor_execute", counting)
    assert not [s for s in statements if "event_seq" in s], statements  # no head read, no replay
    await asyncio.to_thread(write, db, customer, 1)
    for pending in (first_next, second_next):
        assert [e.sequence for e in await asyncio.wait_for(pending, 5)] == [3]  # neither 1 nor 2: from now on
    for stream in (first, second):
        await stream.aclose()  # type: ignore[attr-defined]
    assert broadcaster.subscriber_count == 0


@pytest.mark.parametrize("text_size", [0, 100, 20_000, 3_000_000])  # 1-, 2-, 3- and 4-byte length prefixes
def test_a_batch_of_frames_is_the_wire_form_of_its_response(text_size: int) -> None:
    """gRPC streams write a batch as its entries' frames end to end (api/events.py): that must parse as the response."""
    events = [
        event_pb2.Event(id=new_id(), sequence=n, type=MESSAGE, message=message_pb2.Message(text="x" * text_size))
        for n in (1, 2)
    ]
    entries = [broadcaster_module.LogEntry(e.sequence, e.SerializeToString()) for e in events]
    wire = b"".join(entry.frame for entry in entries)
    assert event_service_pb2.SubscribeEventsResponse.FromString(wire).events == events
    assert wire == event_service_pb2.SubscribeEventsResponse(events=events).SerializeToString()
    assert [entry.event for entry in entries] == events


async def reads_for_a_second_write(
    db: Database, reads: list[Any], first: int, second: int, *, first_per_tx: int = 1, pause: float = 0
) -> int:
    """One subscriber; write `first` events (`first_per_tx` a commit) and take them, then `second` more, one a
    commit `pause` apart, and take them all: how many reads the broadcaster made for the second write."""
    customer = create_customer(db.writer, "paced")
    b = Broadcaster(db, poll_interval=30, buffer_size=100)  # the re-poll tick is far away
    await b.start()
    try:
        sub = b.subscribe(customer, 0, EventFilter())
        await asyncio.to_thread(write, db, customer, first, per_tx=first_per_tx)
        assert len(await asyncio.wait_for(sub.take(), 5)) == first
        before = len(reads)
        await asyncio.to_thread(write, db, customer, second, pause=pause)
        got: list[int] = []
        while len(got) < second:
            got.extend(e.sequence for e in await asyncio.wait_for(sub.take(), 10))
        assert got == list(range(first + 1, first + second + 1))
        return len(reads) - before
    finally:
        await b.stop()


async def test_commits_arriving_while_busy_are_read_together(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ring soon after a read that fanned events out waits out BUSY_INTERVAL: a burst of commits is one read.

    (The interval is stretched here so the five commits surely land within it.)
    """
    monkeypatch.setattr(broadcaster_module, "BUSY_INTERVAL", 2.0)
    reads = count_reads(monkeypatch)
    # The first commit comes after a quiet spell: read at once. Then five commits, five rings: one read.
    assert await reads_for_a_second_write(db, reads, 1, 5) == 1, "the burst was read at once, in one statement"


@pytest.mark.parametrize("first_batch", [1, 3], ids=["light", "heavy"])
async def test_a_heavy_read_stretches_the_wait_before_the_next(
    db: Database, monkeypatch: pytest.MonkeyPatch, first_batch: int
) -> None:
    """After a read that fanned out HEAVY_BATCH events or more, the next waits HEAVY_INTERVAL; after a light one,
    BUSY_INTERVAL (zero here: every paced commit is read on its own)."""
    monkeypatch.setattr(broadcaster_module, "BUSY_INTERVAL", 0)
    monkeypatch.setattr(broadcaster_module, "HEAVY_INTERVAL", 2.0)
    monkeypatch.setattr(broadcaster_module, "HEAVY_BATCH", 3)
    reads = count_reads(monkeypatch)
    # One commit of `first_batch` events (one read), then three commits 100 ms apart.
    made = await reads_for_a_second_write(db, reads, first_batch, 3, first_per_tx=first_batch, pause=0.1)
    if first_batch >= broadcaster_module.HEAVY_BATCH:
        assert made == 1, "the paced commits after a heavy read were read together"
    else:
        assert made >= 3, "each paced commit after a light read was read on its own"
