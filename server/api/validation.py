"""Input checks shared by every handler; each failure names the offending field."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from convhub.server.api import convert
from convhub.server.domain.addresses import Address
from convhub.server.domain.messages import Media
from convhub.server.domain.updates import MaskError, resolve_mask
from convhub.server.errors import InvalidArgument
from convhub.server.services import resources
from convhub.server.services.resources import StoredEnum
from convhub.v1 import common_pb2

MAX_NAME = 255
MAX_DETAIL = 4096
MAX_SUBJECT = 998
MAX_MEDIAS = 20
MAX_URL = 2048
MAX_TAGS = 50
MAX_TAG = 64
MAX_REQUEST_ID = 64
MAX_TRANSACTION_ID = 255
MAX_CREDENTIALS = 20
MAX_CREDENTIAL_VALUE = 4096


def update_fields(mask: field_mask_pb2.FieldMask, patch: Message, updatable: tuple[str, ...]) -> list[str]:
    """The top-level fields an update writes (AIP-134); a bad mask path is INVALID_ARGUMENT on update_mask."""
    try:
        return resolve_mask(
            mask.paths, updatable, (f.name for f in patch.DESCRIPTOR.fields), [f.name for f, _ in patch.ListFields()]
        )
    except MaskError as exc:
        raise InvalidArgument("update_mask", f"{exc.args[0]!r}: {exc.args[1]}") from None


def require_uuid(field: str, value: str) -> str:
    """Ids are UUIDs; anything else is INVALID_ARGUMENT, not a NOT_FOUND probe."""
    if not value:
        raise InvalidArgument(field, "is required")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidArgument(field, "must be a UUID") from None


def optional_uuid(field: str, value: str) -> str | None:
    return require_uuid(field, value) if value else None


def max_length(field: str, value: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument(field, f"must be at most {limit} characters")
    return value


def request_id(value: str, field: str = "request_id") -> str | None:
    if not value:
        return None
    max_length(field, value, MAX_REQUEST_ID)
    if not value.isprintable() or not value.isascii():
        raise InvalidArgument(field, "must be printable ASCII")
    return value


def enum_name(field: str, names: StoredEnum, number: int, *, required: bool) -> str | None:
    if number == 0:
        if required:
            raise InvalidArgument(field, "is required")
        return None
    if number not in names.by_number:
        raise InvalidArgument(field, f"unknown value {number}")
    return names.name(number)


def address(field: str, addr: common_pb2.Address) -> Address:
    """The address as given (type as its stored name, "" when unset); services normalise it for the channel."""
    type_ = enum_name(f"{field}.type", resources.ADDRESS_TYPE, addr.type, required=False) or ""
    return Address(type_, addr.target, max_length(f"{field}.target_name", addr.target_name, MAX_NAME))


def medias(field: str, items: Iterable[common_pb2.Media]) -> list[Media]:
    items = list(items)
    if len(items) > MAX_MEDIAS:
        raise InvalidArgument(field, f"at most {MAX_MEDIAS} items")
    for i, m in enumerate(items):
        if not m.url:
            raise InvalidArgument(f"{field}[{i}].url", "is required")
        max_length(f"{field}[{i}].url", m.url, MAX_URL)
        for name in ("type", "mime_type", "filename"):
            max_length(f"{field}[{i}].{name}", getattr(m, name), MAX_NAME)
        if m.size < 0:
            raise InvalidArgument(f"{field}[{i}].size", "must not be negative")
    return [convert.media_to_dict(m) for m in items]


def tags(field: str, values: Iterable[str]) -> list[str]:
    values = list(values)
    if len(values) > MAX_TAGS:
        raise InvalidArgument(field, f"at most {MAX_TAGS} tags")
    for i, tag in enumerate(values):
        if not tag:
            raise InvalidArgument(f"{field}[{i}]", "must not be empty")
        max_length(f"{field}[{i}]", tag, MAX_TAG)
    return values
