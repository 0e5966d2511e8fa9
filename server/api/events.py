"""EventService: the caller's event log, a page at a time or as a stream (replay, then live).

Requests become an `EventFilter` here (every bad field named); reading and
the replay+live seam live in events/stream.py; this layer maps how a stream
ended to the status a client acts on:

  * OUT_OF_RANGE: the resume point was pruned (ErrorInfo `oldest_sequence`)
    or is beyond the newest event (`newest_sequence`);
  * RESOURCE_EXHAUSTED: the subscriber fell too far behind
    (`last_sequence`: resume after it);
  * UNAVAILABLE: the server is stopping (`last_sequence`: resume elsewhere).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from convhub.server.api import pagination, validation
from convhub.server.api.dispatch import Caller, Encoded, may_run_on_loop
from convhub.server.errors import FieldViolation, InvalidArgument, OutOfRange, ResourceExhausted, Unavailable
from convhub.server.events.broadcaster import EventFilter, SubscriptionEnded
from convhub.server.events.outbox import EVENT_TYPE_NAMES
from convhub.server.events.stream import EventReader, EventsPruned, SequenceAhead
from convhub.server.store.pages import encode_token
from convhub.v1 import event_service_pb2 as pb


def event_filter(types: Iterable[int], conversation_id: str) -> EventFilter:
    names: set[str] = set()
    for i, number in enumerate(types):
        name = EVENT_TYPE_NAMES.get(number)
        if name is None:
            raise InvalidArgument(f"event_types[{i}]", f"unknown event type {number}")
        names.add(name)
    return EventFilter(
        types=frozenset(names) if names else None,
        conversation_id=validation.optional_uuid("conversation_id", conversation_id),
    )


def after_sequence(value: int) -> int:
    if value < 0:
        raise InvalidArgument("after_sequence", "must not be negative")
    return value


class EventMethods:
    def __init__(self, reader: EventReader) -> None:
        self._reader = reader

    @may_run_on_loop
    def ListEvents(self, request: pb.ListEventsRequest, caller: Caller) -> pb.ListEventsResponse:
        size = pagination.size_in_force(request.page_size)
        after = after_sequence(request.after_sequence)
        filters = event_filter(request.event_types, request.conversation_id)
        # A token is only good for the same query: same start, types and conversation.
        types = ",".join(sorted(filters.types or ()))
        scope = f"events:{after}:{types}:{filters.conversation_id or ''}"
        if request.page_token:
            after = pagination.sequence_after(request.page_token, scope)
        try:
            events, last = self._reader.page(caller.customer_id, after, filters, size)
        except (EventsPruned, SequenceAhead) as exc:
            raise _out_of_range(exc) from None
        token = "" if last is None else encode_token(scope, last)
        return pb.ListEventsResponse(result=events, next_page_token=token)

    async def SubscribeEvents(self, request: pb.SubscribeEventsRequest, caller: Caller) -> AsyncIterator[Encoded]:
        filters = event_filter(request.event_types, request.conversation_id)
        after = after_sequence(request.after_sequence) if request.HasField("after_sequence") else None
        try:
            async for batch in self._reader.subscribe(caller.customer_id, after, filters):
                # `events` is the response's only field: its wire form is the events' frames, end to end.
                yield Encoded(pb.SubscribeEventsResponse, b"".join([entry.frame for entry in batch]))
        except (EventsPruned, SequenceAhead) as exc:
            raise _out_of_range(exc) from None
        except SubscriptionEnded as ended:
            metadata = {"last_sequence": str(ended.last_sequence)}
            if ended.too_slow:
                raise ResourceExhausted(
                    f"subscriber fell too far behind; resume after sequence {ended.last_sequence}",
                    reason="SUBSCRIBER_TOO_SLOW",
                    metadata=metadata,
                ) from None
            raise Unavailable(
                f"server is stopping; resume after sequence {ended.last_sequence}",
                reason="SHUTTING_DOWN",
                metadata=metadata,
            ) from None


def _out_of_range(exc: EventsPruned | SequenceAhead) -> OutOfRange:
    """`after_sequence` outside the kept log, named as the offending field (with the bound to resume from)."""
    violations = [FieldViolation("after_sequence", str(exc))]
    if isinstance(exc, EventsPruned):
        return OutOfRange(
            str(exc), reason="EVENTS_PRUNED", metadata={"oldest_sequence": str(exc.oldest)}, violations=violations
        )
    return OutOfRange(
        str(exc), reason="SEQUENCE_AHEAD", metadata={"newest_sequence": str(exc.newest)}, violations=violations
    )
