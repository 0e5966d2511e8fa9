"""Retention: old events are pruned (a prefix of each log, never a hole), and resuming below it is OUT_OF_RANGE."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from sqlalchemy import insert, select

from convhub.server.config import Settings, parse_duration
from convhub.server.store import event_log
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database
from convhub.server.store.models import Event
from tests.conftest import BACKENDS, Hub, new_tenant, running_hub
from tests.eventsupport import EventsApi
from tests.support import rich_error

RETENTION = 5.0


@pytest.fixture(scope="module", params=BACKENDS)
def short_retention_hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    env = {"CONVHUB_EVENT_RETENTION": f"{RETENTION:g}s"}
    yield from running_hub(request.param, tmp_path_factory.mktemp(f"retention-{request.param}"), env=env)


@pytest.fixture
async def api(short_retention_hub: Hub) -> AsyncIterator[EventsApi]:
    tenant = new_tenant(short_retention_hub)
    async with grpc.aio.insecure_channel(short_retention_hub.grpc_target) as ch:
        yield EventsApi(ch, tenant.metadata)


async def out_of_range(call: object) -> dict[str, str]:
    try:
        await call  # type: ignore[misc]
    except grpc.RpcError as err:
        rich = rich_error(err)
        assert (rich.code, rich.reason) == (grpc.StatusCode.OUT_OF_RANGE, "EVENTS_PRUNED"), rich
        assert rich.fields == ["after_sequence"], rich
        return rich.metadata
    raise AssertionError("expected OUT_OF_RANGE")


async def test_resuming_below_the_retention_is_out_of_range_naming_the_oldest_kept_sequence(api: EventsApi) -> None:
    for text in ("a", "b", "c"):
        await api.sms(text=text)  # sequences 1..8
    for _ in range(int(6 * RETENTION / 0.25)):  # the sweep runs every RETENTION / 4
        listed = await api.list(after_sequence=0)
        if not listed.result:
            break
        await asyncio.sleep(0.25)
    assert listed.result == [], "events older than the retention are pruned"

    assert await out_of_range(api.list(after_sequence=1)) == {"oldest_sequence": "9"}  # nothing kept: 9 is next
    await api.sms(text="d")  # 9, 10: kept for the next RETENTION seconds
    assert [e.sequence for e in (await api.list(after_sequence=0)).result] == [9, 10]  # 0: from the oldest kept
    assert [e.sequence for e in (await api.list(after_sequence=8)).result] == [9, 10]
    assert await out_of_range(api.list(after_sequence=7)) == {"oldest_sequence": "9"}

    stale = await api.subscribe(after=3)
    await asyncio.wait_for(stale.task, 10)  # type: ignore[arg-type]
    assert stale.error is not None and rich_error(stale.error).metadata == {"oldest_sequence": "9"}
    fresh = await api.subscribe(after=8)
    await fresh.reached(10)
    await fresh.close()
    assert fresh.sequences == [9, 10]


def test_pruning_takes_a_prefix_even_when_replica_clocks_disagree(local_db: Database) -> None:
    """Event 2 was written on a replica whose clock ran ahead: it goes with 3, so no hole is left at 2."""
    customer_id = create_customer(local_db.writer, "clocks")
    times = {1: 1000, 2: 1005, 3: 1001, 4: 1010}
    rows = [
        {
            "customer_id": customer_id,
            "sequence": seq,
            "id": f"00000000-0000-4000-8000-00000000000{seq}",
            "type": "conversation_updated",
            "resource_id": "00000000-0000-4000-8000-000000000000",
            "payload": b"",
            "tm_create": tm,
        }
        for seq, tm in times.items()
    ]
    with local_db.writer.begin() as conn:
        conn.execute(insert(Event.__table__), rows)
    with local_db.writer.begin() as conn:
        prefixes = event_log.prunable_prefixes(conn, cutoff_us=1003)
        assert prefixes == [(customer_id, 3)]
        assert event_log.delete_prefix_batch(conn, customer_id, 3, batch=2) == 2  # batches: lowest first
        assert event_log.delete_prefix_batch(conn, customer_id, 3, batch=2) == 1
        assert event_log.delete_prefix_batch(conn, customer_id, 3, batch=2) == 0
        kept = conn.execute(select(Event.sequence).where(Event.customer_id == customer_id)).scalars().all()
    assert kept == [4]


@pytest.mark.parametrize(
    ("text", "seconds"), [("7d", 604800), ("12h", 43200), ("30m", 1800), ("45s", 45), ("3600", 3600), ("1.5h", 5400)]
)
def test_retention_accepts_days_hours_minutes_and_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7x", "-1d", "d", "1 week"])
def test_a_malformed_retention_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_retention_defaults_to_seven_days(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONVHUB_EVENT_RETENTION", raising=False)
    assert Settings().event_retention == 7 * 86400
