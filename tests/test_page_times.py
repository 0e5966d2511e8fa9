"""VoIPBIN's timestamp page tokens (domain/page_times.py): every layout VoIPBIN's TimeParse reads, and its own out."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from convhub.server.domain.page_times import parse_time_token, time_token

EXPECTED = int(datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC).timestamp() * 1_000_000)


@pytest.mark.parametrize(
    "token",
    [
        "2024-01-02T03:04:05.678901Z",  # utilhandler.ISO8601Layout
        "2024-01-02T03:04:05.678901",  # ISO8601LayoutNoZ
        "2024-01-02 03:04:05.678901",  # the legacy layout
        "2024-01-02T12:04:05.678901+09:00",  # RFC 3339 with an offset
        "2024-01-02 12:04:05.678901+0900",
        "2024-01-02T03:04:05.678901234Z",  # nanoseconds: cut to microseconds
    ],
)
def test_layouts(token: str) -> None:
    assert parse_time_token(token) == EXPECTED


def test_round_trip_in_voipbins_layout() -> None:
    assert time_token(EXPECTED) == "2024-01-02T03:04:05.678901Z"
    assert parse_time_token(time_token(EXPECTED)) == EXPECTED
    assert parse_time_token("2024-01-02 03:04:05") == EXPECTED - 678901


def test_not_a_time_or_not_a_real_time() -> None:
    assert parse_time_token("eyJzY29wZSI6MX0") is None  # an opaque token
    assert parse_time_token("2024-01-02") is None
    with pytest.raises(ValueError):
        parse_time_token("2024-02-30 03:04:05.000000")
