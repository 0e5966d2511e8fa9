"""Reading the event log: a page at a time (ListEvents), or replay-then-live (SubscribeEvents).

The replay+live seam (DESIGN.md invariant 4): a subscriber registers with
the broadcaster *before* it replays from the table. The broadcaster then
buffers every event above its cursor of that moment, and everything at or
below that cursor committed before the replay's reads began, so the replay
sees it. Replay and buffer together cover the log; draining the buffer
skips what the replay already sent (sequence <= the last one sent). So no
gap and no duplicate, however many writers keep writing meanwhile.

Retention: a reader resuming after N whose next event (N + 1) has been
pruned gets `EventsPruned` naming the oldest kept sequence, checked after
each read so a prune racing the read is caught too.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from sqlalchemy import Connection

from convhub.server.events.broadcaster import Broadcaster, EventFilter, LogEntry, SubscriptionEnded
from convhub.server.store import event_log
from convhub.server.store.db import Database
from convhub.v1 import event_pb2

# Rows per replay read: small enough to keep one inline read short, large enough to catch up fast.
REPLAY_PAGE = 200
# Events per streamed message at most: a gRPC message costs ~10x an event, so busy streams send batches.
MAX_BATCH = 50


class EventsPruned(Exception):
    """The reader asked for events older than the retention keeps."""

    def __init__(self, after: int, oldest: int) -> None:
        super().__init__(f"events after {after} are no longer kept; the oldest available sequence is {oldest}")
        self.oldest = oldest


class SequenceAhead(Exception):
    """The reader asked to resume after a sequence that has not been written (another database?)."""

    def __init__(self, after: int, newest: int) -> None:
        super().__init__(f"after_sequence {after} is beyond the newest event ({newest})")
        self.newest = newest


class EventReader:
    def __init__(self, db: Database, broadcaster: Broadcaster) -> None:
        self._db = db
        self._broadcaster = broadcaster

    def page(
        self, customer_id: str, after: int, event_filter: EventFilter, size: int
    ) -> tuple[list[event_pb2.Event], int | None]:
        """Up to `size` matching events after `after`, and the sequence the next page starts after (None: last).

        Raises EventsPruned / SequenceAhead.
        """
        with self._db.read() as conn:
            rows = _read_checked(conn, customer_id, after, event_filter, size + 1, first=True)
        more = len(rows) > size
        rows = rows[:size]
        return [event_pb2.Event.FromString(row.payload) for row in rows], rows[-1].sequence if more else None

    async def subscribe(
        self, customer_id: str, after: int | None, event_filter: EventFilter
    ) -> AsyncGenerator[list[LogEntry], None]:
        """Events after `after` (None: from now on), replayed from the table and then live, each once, in order.

        Yields them in batches of at most MAX_BATCH: what was ready together.
        Ends with SubscriptionEnded (carrying the last sequence sent) when the
        subscriber falls too far behind or the process stops.
        """
        # A customer already followed here: its feed's cursor is a committed head, no read needed. A
        # thousand subscribers reconnecting at once then cost no statement each (no read on the loop).
        head = self._broadcaster.cursor(customer_id)
        if head is None:
            with self._db.read() as conn:
                head = event_log.log_bounds(conn, customer_id).newest
        sent = head if after is None else after
        first = after is not None
        subscription = self._broadcaster.subscribe(customer_id, head, event_filter)
        try:
            # From now on (after is None): the buffer holds everything above `head` = `sent`, nothing to replay.
            while after is not None:  # replay until the table has nothing more, then hand over to the buffer
                while True:
                    with self._db.read() as conn:
                        rows = _read_checked(conn, customer_id, sent, event_filter, REPLAY_PAGE, first=first)
                    first = False
                    for start in range(0, len(rows), MAX_BATCH):
                        chunk = rows[start : start + MAX_BATCH]
                        yield [LogEntry(row.sequence, row.payload) for row in chunk]
                        sent = chunk[-1].sequence
                    if len(rows) < REPLAY_PAGE:
                        break
                if not subscription.restart():  # the buffer overflowed while replaying: replay the rest
                    break
            subscription.go_live()
            while True:
                fresh = [event for event in await subscription.take() if event.sequence > sent]
                for start in range(0, len(fresh), MAX_BATCH):
                    batch = fresh[start : start + MAX_BATCH]
                    yield batch
                    sent = batch[-1].sequence
        except SubscriptionEnded as ended:
            raise SubscriptionEnded(too_slow=ended.too_slow, last_sequence=sent) from None
        finally:
            self._broadcaster.unsubscribe(subscription)


def _read_checked(
    conn: Connection, customer_id: str, after: int, event_filter: EventFilter, limit: int, *, first: bool
) -> list[Any]:
    """A page, then the log's bounds: read after the page, they prove no event the page needed was pruned."""
    rows = event_log.read_page(
        conn,
        customer_id,
        after,
        types=event_filter.types,
        conversation_id=event_filter.conversation_id,
        limit=limit,
    )
    bounds = event_log.log_bounds(conn, customer_id)
    if after > 0 and bounds.oldest > after + 1:
        raise EventsPruned(after, bounds.oldest)
    if first and after > bounds.newest:
        raise SequenceAhead(after, bounds.newest)
    return rows
