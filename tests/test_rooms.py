"""Room matching at the storage layer: the unique index decides races between transactions."""

from __future__ import annotations

import threading
import time

from convhub.server.domain.rooms import RoomKey, RoomRequest
from convhub.server.store.customers import create_customer
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.rooms import PARTICIPANT_INSERTS, match_rooms
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
