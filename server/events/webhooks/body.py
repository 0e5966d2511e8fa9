"""The webhook body: `{"type", "timestamp", "data"}`, with `data` exactly as the REST API shows the resource.

One exception, from the VoIPBIN docs: `conversation_message_received` carries
`{"conversation_id", "message": {"id", "participant", "channel", "text",
"direction": "inbound", "tm_create"}}` (`received_data`).

`data` goes through the REST shim's own encoder (snake_case, VoIPBIN enum
names, RFC 3339 times, INPUT_ONLY fields such as credentials left out), so a
receiver parses webhooks and API responses with the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from convhub.server.events.outbox import EVENT_TYPE_NAMES
from convhub.server.gateway.codec import encode_message, field_encoder
from convhub.server.gateway.errors import dumps
from convhub.v1 import common_pb2, event_pb2, message_pb2

# The REST encodings of the few fields `received_data` shows (not the whole message: profiles of a
# busy fan-out showed that encode as a fifth of a webhook body's cost).
_MESSAGE = message_pb2.Message.DESCRIPTOR.fields_by_name
_channel_name = field_encoder(_MESSAGE["channel"])
_source_type = field_encoder(common_pb2.Address.DESCRIPTOR.fields_by_name["type"])
_time = field_encoder(_MESSAGE["tm_create"])


@dataclass(frozen=True)
class RenderedEvent:
    event_id: str
    type: str
    body: str
    # The conversation (or, for other resources, the resource) whose events must stay in order.
    ordering_key: str


def ordering_key(event: event_pb2.Event) -> str:
    kind = event.WhichOneof("resource")
    if kind == "conversation":
        return event.conversation.id
    if kind in ("message", "participant"):
        return str(getattr(event, kind).conversation_id)
    resource = getattr(event, kind) if kind else None
    return f"{kind}:{getattr(resource, 'id', '')}"


def received_data(message: message_pb2.Message) -> dict[str, Any]:
    """`conversation_message_received` in the VoIPBIN docs' shape (issue 7), not the whole message.

    `participant` is who wrote it (the message's source); `channel` is the REST
    name of the channel (`message`, `line`, ...); `direction` is the docs'
    `inbound`.
    """
    assert _channel_name is not None and _source_type is not None and _time is not None  # enums, a Timestamp
    return {
        "conversation_id": message.conversation_id,
        "message": {
            "id": message.id,
            "participant": {"type": _source_type(message.source.type), "target": message.source.target},
            "channel": _channel_name(message.channel),
            "text": message.text,
            "direction": "inbound",
            "tm_create": _time(message.tm_create) if message.HasField("tm_create") else None,
        },
    }


def render_event(payload: bytes) -> RenderedEvent:
    """The body for a stored event (its serialized `convhub.v1.Event`)."""
    event = event_pb2.Event.FromString(payload)
    kind = event.WhichOneof("resource")
    if event.type == event_pb2.EVENT_TYPE_CONVERSATION_MESSAGE_RECEIVED and kind == "message":
        data = received_data(event.message)
    else:
        data = encode_message(getattr(event, kind)) if kind else {}
    type_name = EVENT_TYPE_NAMES.get(event.type, "unspecified")
    body = {"type": type_name, "timestamp": event.tm_create.ToJsonString(), "data": data}
    return RenderedEvent(event.id, type_name, dumps(body).decode("utf-8"), ordering_key(event))
