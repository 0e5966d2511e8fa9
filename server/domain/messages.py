"""Messages: their direction, the status machine, and the media they carry.

Status moves forward only: an inbound message is stored already `done`
(received); an outbound one starts `progressing` and ends `done` (delivered)
or `failed` (every channel tried failed). The channels work adds delivery
attempts and fallback on top of these transitions; nothing leaves a final state.
"""

from __future__ import annotations

from typing import TypedDict

INCOMING = "incoming"
OUTGOING = "outgoing"

PROGRESSING = "progressing"
DONE = "done"
FAILED = "failed"

# The longest text a message may carry, whichever way it came in (API, provider hook, email body).
MAX_TEXT = 16384

# Allowed moves; a status absent from the keys is final.
TRANSITIONS: dict[str, frozenset[str]] = {PROGRESSING: frozenset({DONE, FAILED})}


class Media(TypedDict):
    """One attachment as stored (the JSON list in messages.medias)."""

    type: str
    url: str
    mime_type: str
    filename: str
    size: int


def initial_status(direction: str) -> str:
    """Inbound messages arrive already received; outbound ones wait for delivery."""
    return DONE if direction == INCOMING else PROGRESSING


def can_move(current: str, new: str) -> bool:
    """Whether a message in `current` status may be moved to `new`."""
    return new in TRANSITIONS.get(current, frozenset())


def has_content(text: str, subject: str, medias: object) -> bool:
    """A message must say something: text, a subject or at least one media item."""
    return bool(text or subject or medias)


def media_kind(mime_type: str) -> str:
    """A media item's `type` from its MIME type: image, video or audio by the top-level type, else file."""
    top = mime_type.split("/", 1)[0].strip().lower()
    return top if top in ("image", "video", "audio") else "file"
