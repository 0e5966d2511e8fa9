"""store.participants.mark_peers_active: one batch's activity marks, as executemany would apply them in order.

On PostgreSQL the batch is one UPDATE over unnest arrays, where a participant
named twice would be updated from whichever row the join meets first: the
last row for each participant must win, as it does row by row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.services.ingest import InboundMessage, IngestService
from convhub.server.store.customers import create_customer
from convhub.server.store.db import Database
from convhub.server.store.participants import mark_peers_active, participants
from tests.conftest import BACKENDS, migrated_databases


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    yield from migrated_databases(request.param, tmp_path)


def _rooms(db: Database, count: int) -> tuple[str, list[tuple[str, str]]]:
    """A customer with `count` rooms opened by inbound SMS: (room id, the peer's contact id) each."""
    customer_id = create_customer(db.writer, "activity")
    ingest = IngestService(db, Settings())

    async def open_rooms() -> list[str]:
        return [
            (
                await ingest.ingest(
                    InboundMessage(
                        customer_id=customer_id,
                        channel="message",
                        self_address=Address("tel", "+15559990000"),
                        peer=Address("tel", f"+1555000{i:04d}"),
                        text="hi",
                    )
                )
            ).conversation.id
            for i in range(count)
        ]

    rooms = asyncio.run(open_rooms())
    with db.read() as conn:
        peers = dict(
            conn.execute(
                select(participants.c.conversation_id, participants.c.contact_id).where(
                    participants.c.conversation_id.in_(rooms), participants.c.contact_id.is_not(None)
                )
            ).all()
        )
    return customer_id, [(room, peers[room]) for room in rooms]


def test_each_peer_gets_its_last_mark_of_the_batch(db: Database) -> None:
    _, rooms = _rooms(db, 3)
    (a, a_peer), (b, b_peer), (c, _) = rooms
    marks = [
        {"room_id": a, "peer_contact_id": a_peer, "channel": "line", "now": 100},
        {"room_id": b, "peer_contact_id": b_peer, "channel": "email", "now": 101},
        {"room_id": a, "peer_contact_id": a_peer, "channel": "webchat", "now": 102},
        {"room_id": a, "peer_contact_id": b_peer, "channel": "line", "now": 103},  # b's peer is not in room a
    ]
    with db.writer.begin() as conn:
        mark_peers_active(conn, marks)
    with db.read() as conn:
        got = {
            row.conversation_id: (row.last_active_channel, row.tm_last_active)
            for row in conn.execute(
                select(participants).where(
                    participants.c.conversation_id.in_([a, b, c]), participants.c.contact_id.is_not(None)
                )
            )
        }
    assert got[a] == ("webchat", 102)
    assert got[b] == ("email", 101)
    assert got[c][1] not in (100, 101, 102, 103)  # untouched
    # The last row wins whatever its time (the join may meet either first: both orders are tried).
    with db.writer.begin() as conn:
        mark_peers_active(
            conn,
            [
                {"room_id": a, "peer_contact_id": a_peer, "channel": "email", "now": 105},
                {"room_id": a, "peer_contact_id": a_peer, "channel": "line", "now": 104},
            ],
        )
    with db.read() as conn:
        row = conn.execute(
            select(participants).where(participants.c.conversation_id == a, participants.c.contact_id == a_peer)
        ).one()
    assert (row.last_active_channel, row.tm_last_active) == ("line", 104)
