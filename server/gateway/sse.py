"""Server-sent events framing for streamed methods, derived from the message types.

A convention rather than an annotation, so it applies to any streamed method
whose types follow it (today: EventService.SubscribeEvents, whose batches are
sent one event per frame, see `RoutePlan.stream_items`):

  * a streamed item with an integer `sequence` field gets `id: <sequence>`,
    and one with an enum `type` field gets `event: <type's wire name>` (the
    same short name the JSON carries), so `EventSource` listeners can select
    by type and the browser remembers where it was;
  * a request with an integer `after_sequence` field takes the
    `Last-Event-ID` header into it, so an `EventSource` reconnecting after a
    drop resumes after the last event it saw (the header wins over the
    query: it is newer than the URL the stream was opened with).

Idle streams get a comment frame (`KEEPALIVE`) so proxies do not cut them.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from convhub.server.errors import InvalidArgument
from convhub.server.gateway import codec

KEEPALIVE = b": keepalive\n\n"

_INTEGERS = {FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64, FieldDescriptor.CPPTYPE_INT32}


def _singular(fields: Mapping[str, FieldDescriptor], name: str, cpp_types: set[int]) -> str | None:
    f = fields.get(name)
    return f.name if f is not None and not f.is_repeated and f.cpp_type in cpp_types else None


class SseFraming:
    """How one streamed method's items become SSE frames, and how `Last-Event-ID` resumes it.

    `item` is the type of one frame (the streamed message, or the element of a batch); `request` the method's input.
    """

    def __init__(self, item: Descriptor, request: Descriptor) -> None:
        out = item.fields_by_name
        self._id_field = _singular(out, "sequence", _INTEGERS)
        type_field = _singular(out, "type", {FieldDescriptor.CPPTYPE_ENUM})
        enum_type = out["type"].enum_type if type_field else None
        self._event_names = codec.enum_names(enum_type).out if enum_type is not None else None
        self._resume_field = _singular(request.fields_by_name, "after_sequence", _INTEGERS)

    def frame(self, item: Message, data: bytes) -> bytes:
        """`id:` and `event:` lines (when the type has them), then `data:` with the JSON (never multi-line)."""
        lines = []
        if self._id_field is not None:
            lines.append(b"id: %d\n" % getattr(item, self._id_field))
        if self._event_names is not None:
            name = self._event_names.get(getattr(item, "type"))  # noqa: B009
            if name:
                lines.append(b"event: " + name.encode() + b"\n")
        lines.append(b"data: " + data + b"\n\n")
        return b"".join(lines)

    def resume(self, request: Message, last_event_id: str) -> None:
        """Set the request's resume field from a `Last-Event-ID` header (ignored when it has none)."""
        if self._resume_field is None:
            return
        value = last_event_id.strip()
        if not value:  # the stream had sent no id yet
            return
        if not (value.isascii() and value.isdigit()) or len(value) > 18:
            raise InvalidArgument("Last-Event-ID", f"must be a sequence number, got {last_event_id!r}")
        setattr(request, self._resume_field, int(value))
