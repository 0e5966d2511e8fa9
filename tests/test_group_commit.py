"""Group commit: concurrent ingests share a transaction, and one bad item never spoils the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.services.ingest import InboundMessage, IngestService
from convhub.server.store.customers import create_customer
from convhub.server.store.db import open_database
from convhub.server.store.group_commit import GroupCommit
from convhub.server.store.models import Event, Message
from tests.conftest import Hub, secret_box_for_tests


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


def inbound(customer_id: str, peer: str) -> InboundMessage:
    return InboundMessage(
        customer_id=customer_id,
        channel="message",
        self_address=Address("tel", "+15559990000"),
        peer=Address("tel", peer),
        text="hi",
    )


async def test_a_failing_ingest_in_a_batch_fails_alone_and_writes_nothing(hub: Hub) -> None:
    db = open_database(hub.database_url, workers=2, secrets=secret_box_for_tests())
    with ThreadPoolExecutor(2) as executor:
        service = IngestService(db, Settings(), executor)
        good = create_customer(db.writer, "good")
        ghost = "00000000-0000-4000-8000-00000000dead"  # no such customer: its writes violate a foreign key
        results = await asyncio.gather(
            service.ingest(inbound(good, "+15550000001")),
            service.ingest(inbound(ghost, "+15550000002")),
            service.ingest(inbound(good, "+15550000003")),
            return_exceptions=True,
        )
    try:
        assert not isinstance(results[0], BaseException) and not isinstance(results[2], BaseException)
        assert isinstance(results[1], Exception)
        with db.reader.connect() as conn:
            for model, expected in ((Message, {good: 2}), (Event, {good: 8})):
                table = model.__table__
                counts = dict(
                    conn.execute(select(table.c.customer_id, func.count()).group_by(table.c.customer_id)).all()
                )
                assert {k: v for k, v in counts.items() if k in (good, ghost)} == expected
    finally:
        db.dispose()


async def test_messages_from_one_new_peer_in_one_batch_open_the_room_once(hub: Hub) -> None:
    db = open_database(hub.database_url, workers=2, secrets=secret_box_for_tests())
    with ThreadPoolExecutor(2) as executor:
        service = IngestService(db, Settings(), executor)
        customer = create_customer(db.writer, "one-batch")
        results = await asyncio.gather(*(service.ingest(inbound(customer, "+15550000077")) for _ in range(5)))
    try:
        assert len({r.conversation.id for r in results}) == 1
        assert [r.conversation_created for r in results] == [True, False, False, False, False]
        events = Event.__table__
        with db.reader.connect() as conn:
            opened = conn.execute(
                select(func.count()).where(events.c.customer_id == customer, events.c.type == "conversation_created")
            ).scalar_one()
        assert opened == 1
    finally:
        db.dispose()
