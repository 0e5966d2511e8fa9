"""Room matching at the storage layer: the unique index decides races between transactions."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event

from convhub.server.domain.rooms import RoomKey, RoomRequest
from convhub.server.store.customers import create_customer
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.rooms import PARTICIPANT_INSERTS, find_rooms, match_rooms
from tests.conftest import Hub


def test_an_opener_blocked_by_an_uncommitted_room_joins_it_after_commit(hub: Hub) -> None:
    customer_id = create_customer(hub.engine, "race")
    key = RoomKey(customer_id, "message", "tel", "+15559990000", "tel", "+15551112222")
    second: dict[str, object] = {}

    with hub.engine.begin() as conn:
        first = match_rooms(conn, [RoomRequest(key, None, "", "")], DeferredWrites(PARTICIPANT_INSERTS))[key]

        def racer() -> None:
            with hub.engine.begin() as conn2:
                room = match_rooms(conn2, [RoomRequest(key, None, "", "")], DeferredWrites(PARTICIPANT_INSERTS))[key]
                second.update(id=room.row.id, created=room.created)

        thread = threading.Thread(target=racer)
        thread.start()
        time.sleep(0.3)  # the racer is now waiting on our uncommitted room (index or write lock)
        assert not second
    thread.join(timeout=15)
    assert first.created
    assert second == {"id": first.row.id, "created": False}


def _statements(hub: Hub) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(hub.engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(hub.engine, "before_cursor_execute", record)


def test_an_opener_expecting_new_rooms_opens_them_with_one_insert_and_joins_a_room_already_open(hub: Hub) -> None:
    """Ingest asks match_rooms(expect_new=True) for keys whose sender has no open room: no SELECT before the
    INSERT, yet a key whose room is open after all (opened without a person) still joins that room."""
    customer_id = create_customer(hub.engine, "expect-new")

    def key(peer: str) -> RoomKey:
        return RoomKey(customer_id, "message", "tel", "+15559990000", "tel", peer)

    def request(peer: str) -> RoomRequest:
        return RoomRequest(key(peer), None, "", "")

    with hub.engine.begin() as conn:
        old = match_rooms(conn, [request("+15551110001")], DeferredWrites(PARTICIPANT_INSERTS))[key("+15551110001")]
    for seen in _statements(hub):
        with hub.engine.begin() as conn:
            new = match_rooms(conn, [request("+15551110002")], DeferredWrites(PARTICIPANT_INSERTS), expect_new=True)
        opening = [s for s in seen if "conversations" in s]
        with hub.engine.begin() as conn:
            both = match_rooms(
                conn,
                [request("+15551110001"), request("+15551110003")],
                DeferredWrites(PARTICIPANT_INSERTS),
                expect_new=True,
            )
    assert new[key("+15551110002")].created
    assert len(opening) == 1 and opening[0].lstrip().upper().startswith("INSERT"), opening
    assert both[key("+15551110001")].row.id == old.row.id and not both[key("+15551110001")].created
    assert both[key("+15551110003")].created


def test_key_lookups_of_every_batch_size_share_a_few_statements(hub: Hub) -> None:
    """SQLite's OR-per-key lookups are padded to powers of two: group commit forms batches of every size up
    to 64, and a statement per size would keep compiling (PostgreSQL's array statement is one for all)."""
    customer_id = create_customer(hub.engine, "padded-lookups")
    keys = [RoomKey(customer_id, "message", "tel", "+15559990000", "tel", f"+1555222{i:04d}") for i in range(40)]
    with hub.engine.begin() as conn:
        opened = match_rooms(conn, [RoomRequest(keys[2], None, "", "")], DeferredWrites(PARTICIPANT_INSERTS))
    for seen in _statements(hub):
        with hub.engine.connect() as conn:
            found = [find_rooms(conn, keys[:count]) for count in range(1, 41)]
        lookups = {s for s in seen if s.startswith("SELECT")}
    assert [list(rooms) for rooms in found[:2]] == [[], []]
    assert all([room.id for room in rooms.values()] == [opened[keys[2]].row.id] for rooms in found[2:])
    assert len(lookups) == (1 if hub.backend == "postgresql" else 7), len(lookups)  # 1, 2, 4, ... 64 keys
