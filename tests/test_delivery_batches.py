"""Batched writes on the sending path: a send batch and a delivery cycle each share one transaction, and one bad
item never spoils the others (services/sending.py, services/delivery.py). In-process services on a real database
of each backend; no server runs, so nothing else claims the jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select, update

from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.errors import FailedPrecondition
from convhub.server.services.accounts import AccountService, NewAccount
from convhub.server.services.delivery import DeliveryService, Outcome
from convhub.server.services.ingest import InboundMessage, IngestService
from convhub.server.services.lifecycle import LifecycleService
from convhub.server.services.opt_outs import set_opt_out
from convhub.server.services.sending import OutboundMessage, SendingService
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database
from convhub.server.store.doorbell import Doorbell
from convhub.server.store.models import DeliveryJob, Event, Message
from convhub.v1 import event_pb2
from tests.conftest import BACKENDS, migrated_databases

SELF = "+15559990000"
jobs = DeliveryJob.__table__
messages = Message.__table__
events = Event.__table__


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from migrated_databases(request.param, tmp_path)


def _tenant_with_rooms(db: Database, executor: ThreadPoolExecutor, count: int) -> tuple[str, list[str]]:
    """A customer with a Twilio account and `count` rooms (one inbound message each)."""
    customer_id = create_customer(db.writer, "batches")
    AccountService(db, Settings()).create(
        NewAccount(
            customer_id,
            "sms",
            name="twilio",
            address=Address("tel", SELF),
            credentials={"account_sid": "AC" + "0" * 32, "auth_token": "t"},
        )
    )
    ingest = IngestService(db, Settings(), executor)

    async def rooms() -> list[str]:
        results = []
        for i in range(count):
            message = InboundMessage(
                customer_id=customer_id,
                channel="message",
                self_address=Address("tel", SELF),
                peer=Address("tel", f"+1555000{i:04d}"),
                text="hi",
            )
            results.append((await ingest.ingest(message)).conversation.id)
        return results

    return customer_id, asyncio.run(rooms())


def _created_events(db: Database, customer_id: str) -> list[Any]:
    with db.writer.connect() as conn:
        query = select(events).where(events.c.customer_id == customer_id).order_by(events.c.sequence)
        return list(conn.execute(query))


def test_a_send_batch_with_a_closed_room_fails_only_that_send(db: Database) -> None:
    with ThreadPoolExecutor(2) as executor:
        customer_id, rooms = _tenant_with_rooms(db, executor, 4)
        LifecycleService(db).close(customer_id, rooms[1])
        service = SendingService(db, Settings(), Doorbell(), executor)
        batches: list[list[str]] = []
        write = service._write

        def recording(items: Sequence[Any]) -> list[Any]:
            batches.append([item.text for item in items])
            return write(items)

        service._write = recording

        async def send_all() -> list[Any]:
            sends = [OutboundMessage(customer_id, room, text=f"send {i}") for i, room in enumerate(rooms)]
            return await asyncio.gather(*(service.send(s) for s in sends), return_exceptions=True)

        before = len(_created_events(db, customer_id))
        results = asyncio.run(send_all())

    assert isinstance(results[1], FailedPrecondition), results[1]
    sent = [r for i, r in enumerate(results) if i != 1]
    assert all(not isinstance(r, BaseException) for r in sent), results
    # The closed room's send shared a batch with good ones; that batch failed as a whole and was written item by item.
    assert any("send 1" in batch and len(batch) > 1 for batch in batches), batches
    with db.writer.connect() as conn:
        stored = {r.text: r.id for r in conn.execute(select(messages).where(messages.c.text.like("send %")))}
        queued = set(conn.execute(select(jobs.c.message_id)).scalars())
    assert stored == {m.text: m.id for m in sent}
    assert queued == set(stored.values())  # every stored send has its job, and only those
    new = _created_events(db, customer_id)[before:]
    assert [e.type for e in new] == ["conversation_message_created"] * 3
    assert {e.resource_id for e in new} == set(stored.values())
    everything = [e.sequence for e in _created_events(db, customer_id)]
    assert everything == list(range(1, len(everything) + 1))  # gap-free


def test_a_batch_records_every_outcome_whose_lease_still_holds(db: Database) -> None:
    settings = Settings()
    with ThreadPoolExecutor(2) as executor:
        customer_id, rooms = _tenant_with_rooms(db, executor, 3)
        sending = SendingService(db, settings, Doorbell(), executor)

        async def send_all() -> list[Any]:
            sends = [OutboundMessage(customer_id, room, text=f"out {i}") for i, room in enumerate(rooms)]
            return [await sending.send(s) for s in sends]

        sent = asyncio.run(send_all())
    service = DeliveryService(db, settings, Doorbell())
    work = {w.message.text: w for w in service.claim("worker-a", 10)}
    assert set(work) == {"out 0", "out 1", "out 2"}
    # Another worker took "out 1" over (its lease ran out): this worker must write nothing for it.
    with db.writer.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == work["out 1"].job.id).values(claimed_by="worker-b"))
    before = len(_created_events(db, customer_id))

    service.record_all(
        [
            Outcome.accepted(work["out 0"].job, "SM" + "0" * 32, "sent"),
            Outcome.accepted(work["out 1"].job, "SM" + "1" * 32, "sent"),
            Outcome.failed(work["out 2"].job, "21211", "invalid To"),
        ]
    )

    with db.writer.connect() as conn:
        rows = {r.text: r for r in conn.execute(select(messages).where(messages.c.text.like("out %")))}
        states = {r.message_id: r for r in conn.execute(select(jobs))}
    assert (rows["out 0"].status, rows["out 0"].transaction_id) == ("done", "SM" + "0" * 32)
    assert states[rows["out 0"].id].state == "done" and states[rows["out 0"].id].locked_until is None
    assert (rows["out 1"].status, rows["out 1"].transaction_id) == ("progressing", None)
    assert states[rows["out 1"].id].state == "sending" and states[rows["out 1"].id].claimed_by == "worker-b"
    assert (rows["out 2"].status, rows["out 2"].error_code) == ("failed", "21211")
    assert states[rows["out 2"].id].state == "failed"
    new = _created_events(db, customer_id)[before:]
    assert [e.type for e in new] == ["conversation_message_updated"] * 2
    updated = {e.resource_id: event_pb2.Event.FromString(e.payload).message for e in new}
    assert set(updated) == {rows["out 0"].id, rows["out 2"].id}
    assert updated[rows["out 0"].id].transaction_id == "SM" + "0" * 32  # the event carries the written row
    assert {m.id for m in sent} == {r.id for r in rows.values()}


def test_an_accepted_id_that_is_another_messages_fails_only_that_job(db: Database) -> None:
    """A provider id already stored on another message fails the whole batch (unique index); recorded alone,
    that job fails as outcome_unknown and the others are accepted."""
    settings = Settings()
    with ThreadPoolExecutor(2) as executor:
        customer_id, rooms = _tenant_with_rooms(db, executor, 3)
        sending = SendingService(db, settings, Doorbell(), executor)

        async def send_all() -> None:
            for i, room in enumerate(rooms):
                await sending.send(OutboundMessage(customer_id, room, text=f"dup {i}"))

        asyncio.run(send_all())
    service = DeliveryService(db, settings, Doorbell())
    work = {w.message.text: w for w in service.claim("worker-a", 10)}
    taken = "SM" + "a" * 32
    service.record_all([Outcome.accepted(work["dup 0"].job, taken, "sent")])

    service.record_all(
        [
            Outcome.accepted(work["dup 1"].job, taken, "sent"),  # already dup 0's
            Outcome.accepted(work["dup 2"].job, "SM" + "b" * 32, "sent"),
        ]
    )

    with db.writer.connect() as conn:
        rows = {r.text: r for r in conn.execute(select(messages).where(messages.c.text.like("dup %")))}
    assert (rows["dup 1"].status, rows["dup 1"].error_code) == ("failed", "outcome_unknown")
    assert (rows["dup 2"].status, rows["dup 2"].transaction_id) == ("done", "SM" + "b" * 32)
    sequences = [e.sequence for e in _created_events(db, customer_id)]
    assert sequences == list(range(1, len(sequences) + 1))


def test_a_send_batch_reads_each_rooms_peer_with_a_fixed_number_of_statements(db: Database) -> None:
    """The peers' participants, contacts and addresses are read once per batch (sending.Peers), each send still
    routed by its own peer: an opted-out person's send fails alone, the others go to their own number."""
    with ThreadPoolExecutor(2) as executor:
        customer_id, rooms = _tenant_with_rooms(db, executor, 6)
        set_opt_out(
            db, customer_id=customer_id, address=Address("tel", "+15550000002"), channel="message", opted_out=True
        )
        service = SendingService(db, Settings(), Doorbell(), executor)
        statements: list[str] = []

        def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(statement)

        def sends(room_indexes: Sequence[int]) -> list[OutboundMessage]:
            return [OutboundMessage(customer_id, rooms[i], text=f"to {i}", channel="message") for i in room_indexes]

        def batch(room_indexes: Sequence[int]) -> tuple[list[Any], int]:
            """One batch written whole (the service's own call), and the statements it ran."""
            start = len(statements)
            return service._write(sends(room_indexes)), len(statements) - start

        async def send(room_indexes: Sequence[int]) -> list[Any]:
            return await asyncio.gather(*(service.send(s) for s in sends(room_indexes)), return_exceptions=True)

        event.listen(db.writer, "before_cursor_execute", count)
        try:
            two, two_statements = batch([0, 1])
            five, five_statements = batch([0, 1, 3, 4, 5])
        finally:
            event.remove(db.writer, "before_cursor_execute", count)
        with pytest.raises(FailedPrecondition) as whole:  # the opted-out person's send, read with the others
            service._write(sends([0, 2, 3]))
        with_opted_out = asyncio.run(send([0, 2, 3]))

    assert two_statements == five_statements, (two_statements, five_statements)  # not growing with the batch
    assert whole.value.reason == "CHANNEL_OPTED_OUT"
    assert isinstance(with_opted_out[1], FailedPrecondition), with_opted_out
    assert with_opted_out[1].reason == "CHANNEL_OPTED_OUT"
    sent = [r for r in two + five + with_opted_out if not isinstance(r, BaseException)]
    assert len(sent) == 9
    for message in sent:
        index = int(message.text.removeprefix("to "))
        assert message.conversation_id == rooms[index]
        assert message.destination.target == f"+1555000{index:04d}", message
