"""Resource ids are RFC 9562 version-4 UUIDs in canonical form."""

from __future__ import annotations

import uuid

from convhub.server.store.db import new_id


def test_new_ids_are_canonical_random_uuids_and_do_not_repeat() -> None:
    ids = [new_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert str(parsed) == value
