"""Resource ids are RFC 9562 version-7 UUIDs in canonical form: time-ordered, with 74 random bits."""

from __future__ import annotations

import time
import uuid

from convhub.server.store.db import new_id


def test_new_ids_are_canonical_version_7_uuids_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value


def test_new_ids_carry_their_millisecond_and_sort_by_it() -> None:
    """So each table's primary-key index grows at its right edge (see new_id)."""
    before = time.time_ns() // 1_000_000
    first = new_id()
    time.sleep(0.003)
    second = new_id()
    after = time.time_ns() // 1_000_000
    stamps = [uuid.UUID(i).int >> 80 for i in (first, second)]
    assert before <= stamps[0] < stamps[1] <= after
    assert first < second  # as strings too: SQL orders them as text
