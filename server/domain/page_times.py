"""VoIPBIN's hand-built page tokens: a timestamp, meaning "items created before this time, newest first".

VoIPBIN's list queries are `WHERE tm_create < <page_token> ORDER BY tm_create
DESC` and its clients build the first token from the current time
(bin-common-handler `utilhandler.TimeGetCurTime`: `2006-01-02T15:04:05.000000Z`);
its parser also reads the layout without `Z`, the legacy
`2006-01-02 15:04:05.000000`, and offsets. convhub accepts all of those and any
RFC 3339 time alongside its own opaque tokens, and continues such a page with a
token in VoIPBIN's layout.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

_TIME = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?\s*(Z|z|[+-]\d\d:?\d\d)?",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_token(token: str) -> int | None:
    """The time (µs since the epoch) a VoIPBIN page token names; None if `token` is not a timestamp.

    A timestamp without an offset is UTC, as VoIPBIN writes them. Raises ValueError
    for a timestamp-shaped token that names no real time (month 13).
    """
    m = _TIME.fullmatch(token.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    fraction, offset = m.group(7) or "", m.group(8)
    tz = UTC
    if offset and offset not in ("Z", "z"):
        sign = -1 if offset[0] == "-" else 1
        digits = offset[1:].replace(":", "")
        tz = timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))
    when = datetime(year, month, day, hour, minute, second, tzinfo=tz)  # ValueError past the calendar
    micros = int((fraction + "000000")[:6])
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + micros


def time_token(micros: int) -> str:
    """A page token in VoIPBIN's layout (`2006-01-02T15:04:05.000000Z`) for a time in µs since the epoch."""
    when = _EPOCH + timedelta(microseconds=micros)
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
