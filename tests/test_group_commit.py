"""Group commit: concurrent ingests share a transaction, and one bad item never spoils the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from convhub.server.api.dispatch import Caller
from convhub.server.api.ingest import IngestMethods
from convhub.server.config import Settings
from convhub.server.store.customers import create_customer
from convhub.server.store.db import open_database
from convhub.server.store.group_commit import GroupCommit
from convhub.server.store.models import Event, Message
from convhub.v1 import common_pb2
from convhub.v1 import ingest_service_pb2 as ip
from tests.conftest import Hub
from tests.support import SMS, TEL


async def test_items_submitted_together_are_written_in_one_batch_in_order() -> None:
    batches: list[list[int]] = []

    def write_batch(items: Sequence[int]) -> list[int | BaseException]:
        batches.append(list(items))
        return [ValueError(i) if i == 3 else i * 10 for i in items]

    with ThreadPoolExecutor(1) as executor:
        group = GroupCommit(write_batch, executor=executor, max_batch=4)
        results = await asyncio.gather(*(group.submit(i) for i in range(6)), return_exceptions=True)
    assert batches == [[0, 1, 2, 3], [4, 5]]
    assert results[:3] == [0, 10, 20] and results[4:] == [40, 50]
    assert isinstance(results[3], ValueError)


def request(peer: str) -> ip.IngestMessageRequest:
    return ip.IngestMessageRequest(
        channel=SMS,
        self=common_pb2.Address(type=TEL, target="+15559990000"),
        peer=common_pb2.Address(type=TEL, target=peer),
        text="hi",
    )


async def test_a_failing_ingest_in_a_batch_fails_alone_and_writes_nothing(hub: Hub) -> None:
    db = open_database(hub.database_url, workers=2)
    with ThreadPoolExecutor(2) as executor:
        handlers = IngestMethods(db, Settings(), executor)
        good = Caller(create_customer(db.writer, "good"))
        ghost = Caller("00000000-0000-4000-8000-00000000dead")  # no such customer: its writes violate a foreign key
        results = await asyncio.gather(
            handlers.IngestMessage(request("+15550000001"), good),
            handlers.IngestMessage(request("+15550000002"), ghost),
            handlers.IngestMessage(request("+15550000003"), good),
            return_exceptions=True,
        )
    try:
        assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
        assert isinstance(results[1], Exception)
        with db.reader.connect() as conn:
            for model, expected in ((Message, {good.customer_id: 2}), (Event, {good.customer_id: 6})):
                table = model.__table__
                counts = dict(
                    conn.execute(select(table.c.customer_id, func.count()).group_by(table.c.customer_id)).all()
                )
                assert {k: v for k, v in counts.items() if k in (good.customer_id, ghost.customer_id)} == expected
    finally:
        db.dispose()
