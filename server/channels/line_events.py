"""LINE webhook bodies -> the events convhub keeps, checked whole before anything is stored.

A body is `{"destination": <bot user id>, "events": [...]}`. Kept: `message`
events (text, image, video, audio, file, sticker, location), `follow` and
`unfollow`; other event types (postback, join, beacon, ...) are skipped.
Every kept event becomes one inbound message whose provider id is its
`webhookEventId`, so a redelivered event stores nothing new.

What has no text of its own is rendered as text (so every channel, search
and preview shows something), and the raw fields are kept as a media item:
- sticker: `[sticker] <sticker text or keywords>`, media `sticker` with the
  sticker's image URL on LINE's CDN;
- location: `[location] <title>, <address> (<lat>, <lon>)`, media `location`
  with a `geo:` URI (RFC 5870);
- follow: `[followed]` (`[unblocked]` when LINE says the user unblocked us);
  unfollow: `[unfollowed]`.
Images, videos, audio and files carry their content as media (line.py fetches it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from convhub.server.channels import hook_payloads as fields
from convhub.server.channels.hooks import malformed
from convhub.server.domain.addresses import AddressError, normalize_target
from convhub.server.domain.messages import MAX_TEXT, Media

CONTENT_TYPES = frozenset({"image", "video", "audio", "file"})
MESSAGE_TYPES = CONTENT_TYPES | {"text", "sticker", "location"}
KEPT_EVENTS = frozenset({"message", "follow", "unfollow"})
MAX_EVENTS = 100
# The image LINE's own clients show for a sticker (public CDN, no token needed).
STICKER_IMAGE = "https://stickershop.line-scdn.net/stickershop/v1/sticker/{sticker_id}/android/sticker.png"
# LINE's default MIME types for content that comes without one in the event.
CONTENT_MIME = {"image": "image/jpeg", "video": "video/mp4", "audio": "audio/m4a", "file": "application/octet-stream"}


@dataclass(frozen=True, slots=True)
class Content:
    """Message content to fetch from LINE (`url` empty) or an external URL the sender's app gave."""

    message_id: str
    kind: str  # image | video | audio | file
    url: str = ""  # contentProvider "external": originalContentUrl, nothing to fetch
    filename: str = ""
    size: int = 0


@dataclass(frozen=True, slots=True)
class LineEvent:
    event_id: str  # webhookEventId: the provider message id
    peer: str  # who we answer: the user, or the group / room the message was posted in
    user_id: str  # the person (profile lookup); "" when LINE withholds it
    source_type: str  # user | group | room
    text: str
    reply_token: str = ""
    redelivery: bool = False
    medias: tuple[Media, ...] = ()
    content: Content | None = None


@dataclass(frozen=True, slots=True)
class LineBody:
    destination: str
    events: list[LineEvent] = field(default_factory=list)


def parse_body(body: dict[str, Any]) -> LineBody:
    """The kept events of a webhook body; HookRejected (400 naming the field) for a malformed one."""
    destination = fields.string(body, "destination", "destination", required=False, max_length=128)
    raw_events = fields.items(body, "events", "events")
    if len(raw_events) > MAX_EVENTS:
        raise malformed("events", f"at most {MAX_EVENTS} events")
    events: list[LineEvent] = []
    for i, raw in enumerate(raw_events):
        event = parse_event(fields.element(raw, f"events[{i}]"), f"events[{i}]")
        if event is not None:
            events.append(event)
    return LineBody(destination, events)


def parse_event(event: dict[str, Any], path: str) -> LineEvent | None:
    event_type = fields.string(event, "type", f"{path}.type", max_length=64)
    if event_type not in KEPT_EVENTS:
        return None
    event_id = fields.string(event, "webhookEventId", f"{path}.webhookEventId", max_length=255)
    source = fields.child(event, "source", f"{path}.source")
    source_type = fields.string(source, "type", f"{path}.source.type", max_length=16)
    id_key = {"user": "userId", "group": "groupId", "room": "roomId"}.get(source_type)
    if id_key is None:
        raise malformed(f"{path}.source.type", "must be user, group or room")
    peer = _line_id(source, id_key, f"{path}.source.{id_key}", required=True)
    user_id = _line_id(source, "userId", f"{path}.source.userId", required=source_type == "user")
    context = fields.child(event, "deliveryContext", f"{path}.deliveryContext", required=False)
    common: dict[str, Any] = {
        "event_id": event_id,
        "peer": peer,
        "user_id": user_id,
        "source_type": source_type,
        "reply_token": fields.string(event, "replyToken", f"{path}.replyToken", required=False, max_length=255),
        "redelivery": fields.flag(context, "isRedelivery", f"{path}.deliveryContext.isRedelivery"),
    }
    if event_type == "follow":
        follow = fields.child(event, "follow", f"{path}.follow", required=False)
        unblocked = fields.flag(follow, "isUnblocked", f"{path}.follow.isUnblocked")
        return LineEvent(text="[unblocked]" if unblocked else "[followed]", **common)
    if event_type == "unfollow":
        return LineEvent(text="[unfollowed]", **common)
    return _message_event(fields.child(event, "message", f"{path}.message"), f"{path}.message", common)


def _message_event(message: dict[str, Any], path: str, common: dict[str, Any]) -> LineEvent:
    kind = fields.string(message, "type", f"{path}.type", max_length=32)
    if kind not in MESSAGE_TYPES:
        raise malformed(f"{path}.type", f"must be one of {', '.join(sorted(MESSAGE_TYPES))}")
    message_id = fields.string(message, "id", f"{path}.id", max_length=64)
    if kind == "text":
        return LineEvent(text=fields.string(message, "text", f"{path}.text", max_length=MAX_TEXT), **common)
    if kind == "sticker":
        return _sticker(message, path, common)
    if kind == "location":
        return _location(message, path, common)
    return LineEvent(text="", content=_content(message, path, kind, message_id), **common)


def _content(message: dict[str, Any], path: str, kind: str, message_id: str) -> Content:
    provider = fields.child(message, "contentProvider", f"{path}.contentProvider", required=kind != "file")
    filename = fields.string(message, "fileName", f"{path}.fileName", required=False, max_length=255)
    size = fields.number(message, "fileSize", f"{path}.fileSize", required=False)
    source = fields.string(provider, "type", f"{path}.contentProvider.type", required=kind != "file", max_length=16)
    url = ""
    if source == "external":
        url = fields.string(provider, "originalContentUrl", f"{path}.contentProvider.originalContentUrl")
    elif source not in ("", "line"):
        raise malformed(f"{path}.contentProvider.type", "must be line or external")
    return Content(message_id, kind, url, filename, int(size) if size is not None and size >= 0 else 0)


def _sticker(message: dict[str, Any], path: str, common: dict[str, Any]) -> LineEvent:
    package_id = fields.string(message, "packageId", f"{path}.packageId", max_length=64)
    sticker_id = fields.string(message, "stickerId", f"{path}.stickerId", max_length=64)
    if not sticker_id.isdigit():
        raise malformed(f"{path}.stickerId", "must be a number")
    words = fields.string(message, "text", f"{path}.text", required=False, max_length=1000)
    if not words:
        keywords = fields.items(message, "keywords", f"{path}.keywords", required=False)
        words = ", ".join(str(k) for k in keywords[:3] if isinstance(k, str))
    media: Media = {
        "type": "sticker",
        "url": STICKER_IMAGE.format(sticker_id=sticker_id),
        "mime_type": "image/png",
        "filename": f"sticker-{package_id}-{sticker_id}.png",
        "size": 0,
    }
    text = f"[sticker] {words}".strip()
    return LineEvent(text=text, medias=(media,), **common)


def _location(message: dict[str, Any], path: str, common: dict[str, Any]) -> LineEvent:
    latitude = fields.number(message, "latitude", f"{path}.latitude")
    longitude = fields.number(message, "longitude", f"{path}.longitude")
    assert latitude is not None and longitude is not None
    if not (-90 <= latitude <= 90):
        raise malformed(f"{path}.latitude", "must be between -90 and 90")
    if not (-180 <= longitude <= 180):
        raise malformed(f"{path}.longitude", "must be between -180 and 180")
    title = fields.string(message, "title", f"{path}.title", required=False, max_length=255)
    address = fields.string(message, "address", f"{path}.address", required=False, max_length=1000)
    place = ", ".join(part for part in (title, address) if part)
    text = f"[location] {place} ({latitude}, {longitude})" if place else f"[location] ({latitude}, {longitude})"
    media: Media = {
        "type": "location",
        "url": f"geo:{latitude},{longitude}",
        "mime_type": "",
        "filename": title,
        "size": 0,
    }
    return LineEvent(text=text, medias=(media,), **common)


def _line_id(parent: dict[str, Any], key: str, path: str, *, required: bool) -> str:
    """A LINE user, group or room id, checked as the `line` address type is (so ingest cannot refuse it later)."""
    value = fields.string(parent, key, path, required=required, max_length=128)
    if value:
        try:
            normalize_target("line", value, default_region="US")
        except AddressError as exc:
            raise malformed(path, str(exc)) from None
    return value
