"""VoIPBIN's names and spellings on the REST wire; the gRPC contract keeps its AIP names.

A client written for VoIPBIN reads and writes keys convhub's contract spells
differently. The codec (`codec.py`) and the OpenAPI document (`openapi.py`)
both read these tables, so what the server accepts and what it documents
agree:

* input aliases: a VoIPBIN key that fills a contract field (an account's
  write-only `provider_data` object joins its write-only `credentials`);
* output aliases: a VoIPBIN key repeating a field's value (a message's
  `reference_type` is its `channel`);
* output constants: a VoIPBIN key convhub has no value for, sent as VoIPBIN's
  "none" (`reference_id`: convhub keeps no separate referenced resource);
* unset times are `null` and unset ids the nil UUID, as VoIPBIN's typed
  clients expect; the nil UUID on input means "none" too.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from convhub.server.errors import InvalidArgument

NIL_UUID = "00000000-0000-0000-0000-000000000000"

# message full name -> {VoIPBIN input key: the contract field it fills}
INPUT_ALIASES: dict[str, dict[str, str]] = {
    "convhub.v1.Account": {"provider_data": "credentials"},
}
# message full name -> ((VoIPBIN output key, the contract field whose value it repeats), ...)
OUTPUT_ALIASES: dict[str, tuple[tuple[str, str], ...]] = {
    "convhub.v1.Message": (("reference_type", "channel"),),
}
# message full name -> ((VoIPBIN output key, the constant it always carries), ...)
OUTPUT_CONSTANTS: dict[str, tuple[tuple[str, str], ...]] = {
    "convhub.v1.Message": (("reference_id", NIL_UUID),),
}
# Unset, these are written as null rather than left out.
NULL_WHEN_UNSET = frozenset({"tm_delete"})
# Empty, these string ids are written as the nil UUID; the nil UUID on input is "".
NIL_UUID_WHEN_EMPTY = frozenset({"account_id", "owner_id", "reference_id", "message_flow_id"})


# ---------------------------------------------------------------------------
# VoIPBIN's objects whose shape differs from the contract's by more than a name.
# Input fixups rewrite a JSON object before it is decoded; output fixups finish an
# encoded one. EXTRA_KEYS documents the keys they read or write (openapi.py).

MEDIA_PREFIX = "/v1.0/media/"
# bin-conversation-manager/models/media: the `type` enum of VoIPBIN's media object.
VOIPBIN_MEDIA_TYPES = ("image", "video", "audio", "file", "location", "sticker", "template", "imagemap", "flex")
_MIME_FAMILIES = {"image": "image", "video": "video", "audio": "audio"}
_UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_VOIPBIN_TIMES = ("tm_create", "tm_update", "tm_delete")


def media_in(data: dict[str, Any], path: str) -> dict[str, Any]:
    """VoIPBIN's media object in: `id` names a media convhub keeps (its URL is `/v1.0/media/{id}`).

    VoIPBIN's `customer_id` and times are its own bookkeeping (the message
    carries both): accepted and dropped. A `url` given too wins over `id`.
    """
    data = dict(data)
    media_id = data.pop("id", None)
    customer_id = data.pop("customer_id", None)
    for key, value in (("id", media_id), ("customer_id", customer_id)):
        if value is not None and not (isinstance(value, str) and _UUID_RE.fullmatch(value)):
            raise InvalidArgument(f"{path}.{key}", "expected a UUID")
    for key in _VOIPBIN_TIMES:
        value = data.pop(key, None)
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"{path}.{key}", "expected a timestamp or null")
    if media_id is not None and media_id != NIL_UUID and data.get("url") in (None, ""):
        data["url"] = MEDIA_PREFIX + media_id.lower()
    kind = data.get("type")
    if kind not in (None, "") and kind not in VOIPBIN_MEDIA_TYPES:
        raise InvalidArgument(
            f"{path}.type", f"invalid value {kind!r}: expected one of {', '.join(VOIPBIN_MEDIA_TYPES)}"
        )
    return data


def media_type_of(kind: str, mime_type: str) -> str:
    """A value of VoIPBIN's media `type` enum: the stored kind, else the MIME family, else `file`."""
    if kind in VOIPBIN_MEDIA_TYPES:
        return kind
    return _MIME_FAMILIES.get(mime_type.partition("/")[0].lower(), "file")


def media_out(msg: Any, out: dict[str, Any]) -> None:
    """VoIPBIN's media object out: `id` (the kept media's, else the nil UUID), its `type` enum, null times."""
    url: str = msg.url
    tail = url.partition(MEDIA_PREFIX)[2] if MEDIA_PREFIX in url else ""
    out["id"] = tail.lower() if _UUID_RE.fullmatch(tail) else NIL_UUID
    out["customer_id"] = NIL_UUID  # the message's customer_id is the owner; VoIPBIN's typed clients want a UUID
    out["type"] = media_type_of(msg.type, msg.mime_type)
    for key in _VOIPBIN_TIMES:
        out[key] = None


def address_in(data: dict[str, Any], path: str) -> dict[str, Any]:
    """VoIPBIN's address `name` fills `target_name` (unless that is given); `detail` has no place: dropped."""
    data = dict(data)
    name = data.pop("name", None)
    detail = data.pop("detail", None)
    for key, value in (("name", name), ("detail", detail)):
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(f"{path}.{key}", "expected a string")
    if name and not data.get("target_name") and not data.get("targetName"):
        data["target_name"] = name
    return data


# A LINE or WhatsApp conversation's peer is VoIPBIN's dialog (LINE: the groupId or
# roomId the message was posted in, else the userId; WhatsApp: the wa_id).
_DIALOG_TYPES = frozenset({"line", "whatsapp"})


def conversation_out(msg: Any, out: dict[str, Any]) -> None:
    """VoIPBIN's `dialog_id`: the chat the provider knows the conversation by ("" for SMS, email, web chat)."""
    out["dialog_id"] = msg.peer.target if out.get("type") in _DIALOG_TYPES else ""


InputFixup = Callable[[dict[str, Any], str], dict[str, Any]]
OutputFixup = Callable[[Any, dict[str, Any]], None]
INPUT_FIXUPS: dict[str, InputFixup] = {"convhub.v1.Media": media_in, "convhub.v1.Address": address_in}
OUTPUT_FIXUPS: dict[str, OutputFixup] = {"convhub.v1.Media": media_out, "convhub.v1.Conversation": conversation_out}
_UUID_SCHEMA = {"type": "string", "format": "uuid"}
_TIME_SCHEMA = {"type": "string", "format": "date-time", "nullable": True}
# message full name -> {key: OpenAPI schema} for the keys the fixups read or write
EXTRA_KEYS: dict[str, dict[str, dict[str, Any]]] = {
    "convhub.v1.Media": {
        "id": {**_UUID_SCHEMA, "description": "VoIPBIN's media id: a media convhub keeps (`/v1.0/media/{id}`)."},
        "customer_id": {**_UUID_SCHEMA, "description": "Always the nil UUID (the message names its customer)."},
        **{key: {**_TIME_SCHEMA, "description": "VoIPBIN's media time: null."} for key in _VOIPBIN_TIMES},
    },
    "convhub.v1.Address": {
        "name": {"type": "string", "writeOnly": True, "description": "VoIPBIN's name: fills `target_name`."},
        "detail": {"type": "string", "writeOnly": True, "description": "VoIPBIN's detail: accepted, not stored."},
    },
    "convhub.v1.Conversation": {
        "dialog_id": {
            "type": "string",
            "readOnly": True,
            "description": "LINE: the group, room or user id of the chat; WhatsApp: the wa_id; else empty.",
        },
    },
}
# Media may name a kept media by `id` instead of giving a `url`.
REQUIRED_ALTERNATIVES: dict[str, dict[str, str]] = {"convhub.v1.Media": {"url": "id"}}


# ---------------------------------------------------------------------------
# VoIPBIN documents a JSON body of filters on `GET /v1.0/conversations`
# (openapi/paths/conversations/main.yaml). The gateway reads it as the query
# parameters it stands for, so those filters are honoured, and refuses the ones
# convhub cannot apply rather than return everything.


def conversation_list_body(data: Any) -> list[tuple[str, str]]:
    """VoIPBIN's list-filter body -> query parameters; InvalidArgument naming a key convhub cannot apply."""
    if not isinstance(data, dict):
        raise InvalidArgument("body", "expected a JSON object of filters")
    query: list[tuple[str, str]] = []
    for key, value in data.items():
        if key == "type":
            if not isinstance(value, str):
                raise InvalidArgument(key, "expected a string")
            query.append(("type", value))
        elif key == "customer_id":  # VoIPBIN's api-manager forces the caller's customer too: the token decides
            if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
                raise InvalidArgument(key, "expected a UUID")
        elif key == "deleted":
            if not isinstance(value, bool):
                raise InvalidArgument(key, "expected true or false")
            if value:
                raise InvalidArgument(key, "listing deleted conversations is not supported")
        elif key in ("account_id", "dialog_id"):
            if not isinstance(value, str):
                raise InvalidArgument(key, "expected a string")
            # A LINE or WhatsApp conversation's dialog is its peer (conversation_out above).
            query.append(("account_id" if key == "account_id" else "peer.target", value))
        else:
            raise InvalidArgument(key if key else 'body[""]', "unknown field")
    return query


# request message full name -> reader of the JSON body VoIPBIN sends with that GET
GET_BODY_READERS: dict[str, Callable[[Any], list[tuple[str, str]]]] = {
    "convhub.v1.ListConversationsRequest": conversation_list_body,
}
