"""store.webhooks.claim_due / record_outcomes: a cycle's leases and outcomes, however many, on both databases.

On PostgreSQL a claim leases all its deliveries in one statement and a cycle
records all its outcomes in one UPDATE over unnest arrays; the rules stay the
row-by-row ones: an outcome whose lease was lost (expired and taken over by
another worker) is dropped, and each delivery gets its own result.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from convhub.server.store import webhooks as store
from convhub.server.store.db import Database, now_us
from tests.conftest import BACKENDS, migrated_databases
from tests.test_webhook_chains import _endpoint_with_chains

deliveries = store.deliveries


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from migrated_databases(request.param, tmp_path)


def test_outcomes_are_recorded_only_under_the_lease_that_made_them(db: Database) -> None:
    _endpoint_with_chains(db, {f"room-{i}": 1 for i in range(4)})
    with db.writer.begin() as conn:
        heads = store.claim_due(conn, "w1", 10, 60_000_000, lambda _e: 100, str)
    assert len(heads) == 4
    with db.read() as conn:
        leased = conn.execute(select(deliveries.c.id, deliveries.c.locked_by)).all()
    assert {row.locked_by for row in leased} == {"w1"}  # one claim leased them all
    lost = heads[0].id
    with db.writer.begin() as conn:  # its lease expired and another worker took it over
        conn.execute(update(deliveries).where(deliveries.c.id == lost).values(locked_by="w2"))
    now = now_us()
    outcomes = [
        store.Outcome(h.id, h.endpoint_id, h.ordering_key, store.SUCCEEDED, 1, now, 200 + i, f"e{i}")
        for i, h in enumerate(heads)
    ]
    with db.writer.begin() as conn:
        store.record_outcomes(conn, "w1", outcomes)
    with db.read() as conn:
        rows = {r.id: r for r in conn.execute(select(deliveries))}
    assert (rows[lost].status, rows[lost].locked_by, rows[lost].attempts) == (store.PENDING, "w2", 0)
    for i, head in enumerate(heads[1:], start=1):
        row = rows[head.id]
        assert (row.status, row.locked_by, row.attempts, row.last_response_code, row.last_error) == (
            store.SUCCEEDED,
            None,
            1,
            200 + i,
            f"e{i}",
        )
