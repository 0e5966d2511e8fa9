"""The per-process event broadcaster: one reader of the event table, fanning out to every subscriber.

Subscribers do not poll the database. The broadcaster holds one doorbell
listener; on each ring (a local commit wrote events; on PostgreSQL also a
NOTIFY from another replica) and on a re-poll tick, it reads the events after
each subscribed customer's cursor (one statement for all customers), then
hands each event to the bounded buffers of that customer's matching
subscribers. A thousand subscribers cost one query per wake-up, not a
thousand. The table is the truth: a lost ring costs latency (until the next
tick), never an event.

Invariant kept for the replay+live seam (events/stream.py): a subscription
receives every event above its customer's cursor at the moment it
subscribed, and everything at or below that cursor had committed by then.
Subscribing and a fan-out run on the event loop, so they never interleave
(on PostgreSQL the read before a fan-out runs on a thread).

Backpressure: a buffer that fills up is emptied and marked overflowed. A
live subscription that overflows is dropped at once (its handler ends the
stream with RESOURCE_EXHAUSTED); one still replaying from the table keeps
its registration and replays again (see `Subscription.restart`).

Without subscribers the broadcaster does not hear the doorbell (each commit
would wake the loop for nothing); the first subscription turns it on again.

Coalescing: while events keep coming, a read that fanned some out is
followed by the next at most `BUSY_INTERVAL` later, so a busy stream carries
a few larger messages rather than one per commit (a streamed message costs
the server far more than an event in it); the first ring after a quiet
spell is served at once. Under heavy load (a read fanned out `HEAVY_BATCH`
events or more, ~1,600 events/s at `BUSY_INTERVAL`) the next read waits
`HEAVY_INTERVAL`: then the API is short of CPU, and each streamed message
it saves is worth more than the latency it adds.

Subscribers receive `LogEntry`s: the stored payload, framed once as an
`events` field of `SubscribeEventsResponse` and shared, so a gRPC stream
writes a batch as the concatenation of its frames (api/events.py), no
message built or serialized per subscriber.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from convhub.server.events.wire import length_delimited
from convhub.server.store import event_log
from convhub.server.store.db import Database
from convhub.server.store.doorbell import DoorbellListener
from convhub.v1 import event_pb2

log = logging.getLogger("convhub.events")

# While busy, reads (and so streamed messages) at most this often: ~10 ms of latency at most, for
# ~10x fewer messages per stream at a thousand commits/s.
BUSY_INTERVAL = 0.01
# Under heavy load (a read fanned out at least HEAVY_BATCH events) at most this often. Measured
# (webhooks_bench (c), SQLite, 10 subscribers, API saturated): API CPU per ingest call 0.68 ms at
# 10 ms, 0.645 ms at 30 ms, 0.65 ms at 50 ms; ingest with the subscribers and an endpoint +6 %.
HEAVY_INTERVAL = 0.03
HEAVY_BATCH = 16


_EVENTS_TAG = b"\x0a"  # SubscribeEventsResponse.events: field 1, length-delimited


class LogEntry:
    """One stored event, shared by every subscriber it goes to: its sequence and wire forms.

    `frame` is the event as one `events` field of `SubscribeEventsResponse`:
    a response's wire form is the concatenation of its events' frames.
    `event` decodes the payload on first use.
    """

    __slots__ = ("_event", "frame", "payload", "sequence")

    def __init__(self, sequence: int, payload: bytes) -> None:
        self.sequence = sequence
        self.payload = payload
        self.frame = length_delimited(_EVENTS_TAG, payload)
        self._event: event_pb2.Event | None = None

    @property
    def event(self) -> event_pb2.Event:
        if self._event is None:
            self._event = event_pb2.Event.FromString(self.payload)
        return self._event


@dataclass(frozen=True)
class EventFilter:
    """Which events a reader wants: some types (None: all) of one conversation (None: any)."""

    types: frozenset[str] | None = None
    conversation_id: str | None = None


class SubscriptionEnded(Exception):
    """The broadcaster ended a subscription: its buffer overflowed (`too_slow`), or the process is stopping."""

    def __init__(self, *, too_slow: bool, last_sequence: int = 0) -> None:
        super().__init__("subscriber fell too far behind" if too_slow else "server is stopping")
        self.too_slow = too_slow
        self.last_sequence = last_sequence


class Subscription:
    """One subscriber's bounded buffer, filled by the broadcaster and drained by the subscriber's stream."""

    def __init__(self, customer_id: str, event_filter: EventFilter, limit: int) -> None:
        self.customer_id = customer_id
        self.filter = event_filter
        self.limit = limit
        self.overflowed = False
        self.live = False  # replaying from the table until go_live()
        self.stopped = False
        self._buffer: deque[LogEntry] = deque()
        self._ready = asyncio.Event()

    def offer(self, event: LogEntry) -> None:
        if self.overflowed or self.stopped:
            return
        if len(self._buffer) >= self.limit:
            self.overflowed = True
            self._buffer.clear()  # the table still has them: the subscriber resumes from there
            return
        self._buffer.append(event)

    def wake(self) -> None:
        self._ready.set()

    def stop(self) -> None:
        self.stopped = True
        self._buffer.clear()
        self._ready.set()

    def restart(self) -> bool:
        """If the buffer overflowed while replaying: empty it and buffer afresh (the caller replays again).

        Returns whether it had overflowed. Buffering restarts above the
        broadcaster's cursor of this moment, and everything up to that cursor
        has committed, so a replay that starts after this call closes the gap.
        """
        if not self.overflowed:
            return False
        self.overflowed = False
        self._buffer.clear()
        return True

    def go_live(self) -> None:
        """From now on an overflow ends the subscription instead of prompting another replay."""
        self.live = True

    async def take(self) -> list[LogEntry]:
        """Everything buffered (waiting for at least one event); raises SubscriptionEnded when ended."""
        while True:
            if self.stopped:
                raise SubscriptionEnded(too_slow=False)
            if self.overflowed:
                raise SubscriptionEnded(too_slow=True)
            if self._buffer:
                items = list(self._buffer)
                self._buffer.clear()
                return items
            self._ready.clear()
            await self._ready.wait()


class _Feed:
    """One customer's subscribers, indexed by conversation so a fan-out touches only those that match."""

    def __init__(self, cursor: int) -> None:
        self.cursor = cursor  # the last sequence fanned out
        self.anywhere: set[Subscription] = set()
        self.by_conversation: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> None:
        conversation_id = sub.filter.conversation_id
        if conversation_id is None:
            self.anywhere.add(sub)
        else:
            self.by_conversation.setdefault(conversation_id, set()).add(sub)

    def remove(self, sub: Subscription) -> None:
        conversation_id = sub.filter.conversation_id
        if conversation_id is None:
            self.anywhere.discard(sub)
            return
        subs = self.by_conversation.get(conversation_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self.by_conversation[conversation_id]

    def __bool__(self) -> bool:
        return bool(self.anywhere or self.by_conversation)

    def targets(self, conversation_id: str | None) -> Iterable[Subscription]:
        if conversation_id is None:
            return self.anywhere
        subs = self.by_conversation.get(conversation_id)
        return self.anywhere if not subs else (*self.anywhere, *subs)

    def all(self) -> Iterable[Subscription]:
        yield from self.anywhere
        for subs in self.by_conversation.values():
            yield from subs


class Broadcaster:
    """The process's one reader of the event log for live subscribers (a `Worker`)."""

    name = "event-broadcaster"

    def __init__(self, db: Database, *, poll_interval: float, buffer_size: int, read_limit: int = 1000) -> None:
        self._db = db
        self._poll_interval = poll_interval
        self._buffer_size = buffer_size
        self._read_limit = read_limit
        self._feeds: dict[str, _Feed] = {}
        self._listener: DoorbellListener | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._failing = False
        self._reader: ThreadPoolExecutor | None = None  # PostgreSQL: where the reads run (see _poll)

    @property
    def subscriber_count(self) -> int:
        return sum(1 for feed in self._feeds.values() for _ in feed.all())

    def cursor(self, customer_id: str) -> int | None:
        """The last sequence fanned out to the customer's subscribers; None when it has none.

        Everything up to it has committed, and a subscription registered now
        receives everything above it: a subscriber "from now on" can start
        here without reading the table.
        """
        feed = self._feeds.get(customer_id)
        return None if feed is None else feed.cursor

    def subscribe(self, customer_id: str, head: int, event_filter: EventFilter) -> Subscription:
        """Register a subscriber; it receives every event above the customer's cursor from now on.

        `head` must be a sequence the caller saw committed (the customer's
        counter, read just before): it becomes the cursor when this is the
        customer's first subscriber.
        """
        if self._stopped:
            raise SubscriptionEnded(too_slow=False)
        sub = Subscription(customer_id, event_filter, self._buffer_size)
        feed = self._feeds.get(customer_id)
        if feed is None:
            if not self._feeds:
                self._listen(True)
            feed = self._feeds[customer_id] = _Feed(head)
        feed.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        feed = self._feeds.get(sub.customer_id)
        if feed is None:
            return
        feed.remove(sub)
        if not feed:
            del self._feeds[sub.customer_id]
            if not self._feeds:
                self._listen(False)

    def _listen(self, on: bool) -> None:
        """Hear the doorbell only while someone is subscribed: otherwise each commit would wake the loop for nothing.

        Turned on, it reads at once: a ring missed while off may have been for
        events above the new subscriber's cursor.
        """
        if self._listener is not None:
            self._listener.listening = on
            if on:
                self._listener.wake()

    async def start(self) -> None:
        self._listener = self._db.doorbell.listener()
        self._listener.listening = bool(self._feeds)
        if self._db.backend == "postgresql":
            self._reader = ThreadPoolExecutor(1, thread_name_prefix="convhub-events")
            self._reader.submit(int)  # its one thread starts now, not at the first read: a fixed footprint
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        """Stop reading and end every subscription (their streams answer UNAVAILABLE: resume elsewhere).

        The loop also checks `_stopped`: on Python 3.11 a cancel that lands as the
        doorbell's `wait_for` completes can be swallowed, and the task would run on.
        """
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for feed in self._feeds.values():
            for sub in feed.all():
                sub.stop()
        self._feeds.clear()
        if self._reader is not None:
            await asyncio.to_thread(self._reader.shutdown)  # a read cancelled above may still be finishing
            self._reader = None

    async def _run(self) -> None:
        assert self._listener is not None
        loop = asyncio.get_running_loop()
        fanned_at = -BUSY_INTERVAL  # loop time of the last read that fanned events out
        interval = BUSY_INTERVAL
        while not self._stopped:
            try:
                fanned, more = await self._poll()
            except Exception as exc:  # the database is away: keep the loop, retry on the next tick
                if not self._failing:
                    log.warning("event broadcaster: reading the event log failed (%s); retrying", type(exc).__name__)
                self._failing = True
                fanned, more = 0, False
            else:
                self._failing = False
            if fanned:
                fanned_at = loop.time()
                interval = HEAVY_INTERVAL if fanned >= HEAVY_BATCH else BUSY_INTERVAL
            if more:
                await asyncio.sleep(0)  # let subscribers drain before the next read
                continue
            if await self._listener.wait(self._poll_interval):
                # Rung soon after a read that found events: commits keep coming, let a few gather.
                # (Rings arriving meanwhile are merged into this read: the listener stays set.)
                pause = fanned_at + interval - loop.time()
                if pause > 0:
                    await asyncio.sleep(pause)

    async def _poll(self) -> tuple[int, bool]:
        """One read for every subscribed customer, then fan-out: (events fanned out, more may be waiting).

        On PostgreSQL the read runs on a thread of its own: it is a round trip, during
        which the loop keeps serving calls (measured: 5 % of the loop's time
        blocked in this read while ingest ran flat out with subscribers).
        SQLite answers it faster than the thread hop. The fan-out stays on the
        loop; what subscribes meanwhile gets every event above its cursor, as
        the fan-out only moves cursors forward, past rows it checks one by one.
        """
        if not self._feeds:
            return 0, False
        cursors = {customer_id: feed.cursor for customer_id, feed in self._feeds.items()}
        if self._reader is not None:
            rows, more = await asyncio.get_running_loop().run_in_executor(self._reader, self._read, cursors)
        else:
            rows, more = self._read(cursors)
        return self._fan_out(rows), more

    def _read(self, cursors: dict[str, int]) -> tuple[list[Any], bool]:
        with self._db.read() as conn:
            return event_log.read_feeds(conn, cursors, self._read_limit)

    def _fan_out(self, rows: list[Any]) -> int:
        """Hand each row to its matching subscribers; how many rows some subscriber got."""
        woken: set[Subscription] = set()
        fanned = 0
        for row in rows:
            feed = self._feeds.get(row.customer_id)
            if feed is None or row.sequence <= feed.cursor:
                continue
            feed.cursor = row.sequence
            entry = None
            for sub in feed.targets(row.conversation_id):
                types = sub.filter.types
                if types is not None and row.type not in types:
                    continue
                if entry is None:  # framed once, shared by every subscriber
                    entry = LogEntry(row.sequence, row.payload)
                    fanned += 1
                sub.offer(entry)
                woken.add(sub)
        for sub in woken:
            if sub.overflowed and sub.live:
                self.unsubscribe(sub)  # its stream ends; the buffer is freed now, not when the client reads
            sub.wake()
        return fanned
