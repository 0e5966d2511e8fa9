"""Room matching (DESIGN.md invariant 2): one open conversation per (customer, channel, self, peer).

`match_rooms` serves a whole batch of inbound messages with two statements:
one SELECT for every key's open room, then one multi-row
`INSERT .. ON CONFLICT DO NOTHING RETURNING` for the keys that have none. The
partial unique index `uq_conversations_open_room` makes this race-free across
threads and replicas: a concurrent opener's insert waits for the winner's
commit, inserts nothing, and the opener joins the winner's room.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from convhub.server.store.db import RowValues, WriteConflict, new_id, now_us
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.keysets import KeyLookup
from convhub.server.store.models import Conversation, Participant, ParticipantAddress

conversations = Conversation.__table__
participants = Participant.__table__
participant_addresses = ParticipantAddress.__table__


@dataclass(frozen=True)
class RoomKey:
    customer_id: str
    channel: str
    self_type: str
    self_target: str
    peer_type: str
    peer_target: str

    @property
    def index_values(self) -> tuple[str, str, str, str]:
        """The columns of uq_conversations_open_room, in its order."""
        return (self.customer_id, self.channel, self.self_target, self.peer_target)


@dataclass(frozen=True)
class RoomRequest:
    """A key to match, and what to open the room with if there is none."""

    key: RoomKey
    account_id: str | None
    self_name: str
    peer_name: str


class RoomRaceLost(WriteConflict):
    """The room another opener created was closed before this one could join it; retry the ingest."""


@dataclass(frozen=True)
class Room:
    row: Any
    created: bool
    peer_participant: Any | None  # the participant row opened with the room


OPEN_ROOM = text("state = 'open' AND tm_delete IS NULL")
ROOM_KEY_COLUMNS = ["customer_id", "type", "self_target", "peer_target"]

# The open-room condition is literal SQL, not a bound "open": only then can a planner
# prove it implies the partial index's predicate (PostgreSQL generic plans, SQLite
# always) and probe uq_conversations_open_room instead of scanning.
_find_rooms = KeyLookup(conversations, ROOM_KEY_COLUMNS, OPEN_ROOM)
# SQLite: a multi-row INSERT ("insertmanyvalues").
_insert_rooms_sqlite = (
    sqlite_insert(conversations)
    .on_conflict_do_nothing(index_elements=ROOM_KEY_COLUMNS, index_where=OPEN_ROOM)
    .returning(conversations.c.id)
)
# PostgreSQL: one array per column through unnest, for the reason given in keysets.py.
_ROOM_ARRAY_COLUMNS = (
    "id",
    "customer_id",
    "account_id",
    "type",
    "self_type",
    "self_target",
    "self_name",
    "peer_type",
    "peer_target",
    "peer_name",
)
_insert_rooms_pg = text(
    "INSERT INTO conversations (id, customer_id, account_id, type, self_type, self_target, self_name,"
    " peer_type, peer_target, peer_name, name, detail, owner_type, owner_id, metadata, tags, state,"
    " tm_create, tm_update)"
    f" SELECT r.*, '', '', '', '', '{{}}'::json, '[]'::json, 'open', :now, :now"
    f" FROM unnest({', '.join(f'CAST(:{c} AS text[])' for c in _ROOM_ARRAY_COLUMNS)})"
    f" AS r({', '.join(_ROOM_ARRAY_COLUMNS)})"
    " ON CONFLICT (customer_id, type, self_target, peer_target) WHERE state = 'open' AND tm_delete IS NULL"
    " DO NOTHING RETURNING id"
)
_insert_participant = insert(participants)
_insert_address = insert(participant_addresses)
# Deferred statements of a room's opening, parents first.
PARTICIPANT_INSERTS = (_insert_participant, _insert_address)


def find_rooms(conn: Connection, keys: Sequence[RoomKey]) -> dict[tuple[str, str, str, str], Any]:
    """The open rooms for `keys`, by index values."""
    rows = _find_rooms.fetch(conn, [k.index_values for k in keys])
    return {(r.customer_id, r.type, r.self_target, r.peer_target): r for r in rows}


def insert_rooms(conn: Connection, values: list[dict[str, Any]], now: int) -> set[str]:
    """Insert the rooms that no open room's key blocks; the ids of those inserted."""
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = {c: [v[c] for v in values] for c in _ROOM_ARRAY_COLUMNS}
        result = conn.execute(_insert_rooms_pg, {**params, "now": now})
    else:
        result = conn.execute(_insert_rooms_sqlite, values)
    return {row.id for row in result.all()}


def match_rooms(conn: Connection, requests: Sequence[RoomRequest], deferred: DeferredWrites) -> dict[RoomKey, Room]:
    """The open room for each request's key, opening (with a peer participant) those that have none.

    Room rows are written at once (the unique index must decide now); the
    participant rows go to `deferred`, which must order PARTICIPANT_INSERTS first.
    """
    unique = list({r.key: r for r in requests}.values())
    found = find_rooms(conn, [r.key for r in unique])
    rooms = {r.key: Room(found[r.key.index_values], False, None) for r in unique if r.key.index_values in found}
    missing = [r for r in unique if r.key not in rooms]
    if not missing:
        return rooms
    now = now_us()
    values = [_room_values(r, now) for r in missing]
    inserted = insert_rooms(conn, values, now)
    lost = [r for r, v in zip(missing, values, strict=True) if v["id"] not in inserted]
    winners = find_rooms(conn, [r.key for r in lost]) if lost else {}
    for request, room_values in zip(missing, values, strict=True):
        key = request.key
        if room_values["id"] in inserted:
            rooms[key] = Room(RowValues(room_values), True, _open_participant(deferred, request, room_values, now))
        elif key.index_values in winners:  # a concurrent opener won: join its room
            rooms[key] = Room(winners[key.index_values], False, None)
        else:  # ...which closed again in between: let the caller retry
            raise RoomRaceLost(key)
    return rooms


def match_room(conn: Connection, request: RoomRequest, deferred: DeferredWrites) -> Room:
    return match_rooms(conn, [request], deferred)[request.key]


def _room_values(request: RoomRequest, now: int) -> dict[str, Any]:
    key = request.key
    return {
        "id": new_id(),
        "customer_id": key.customer_id,
        "account_id": request.account_id,
        "name": "",
        "detail": "",
        "type": key.channel,
        "self_type": key.self_type,
        "self_target": key.self_target,
        "self_name": request.self_name,
        "peer_type": key.peer_type,
        "peer_target": key.peer_target,
        "peer_name": request.peer_name,
        "owner_type": "",
        "owner_id": "",
        "metadata": {},
        "tags": [],
        "state": "open",
        "tm_create": now,
        "tm_update": now,
        "tm_delete": None,
    }


def _open_participant(deferred: DeferredWrites, request: RoomRequest, room: dict[str, Any], now: int) -> RowValues:
    key = request.key
    participant = {
        "id": new_id(),
        "customer_id": key.customer_id,
        "conversation_id": room["id"],
        "name": request.peer_name,
        "preferred_channel": key.channel,
        "last_active_channel": key.channel,
        "tm_last_active": now,
        "tm_create": now,
        "tm_update": now,
        "tm_delete": None,
    }
    deferred.add(_insert_participant, participant)
    deferred.add(
        _insert_address,
        {
            "id": new_id(),
            "participant_id": participant["id"],
            "customer_id": key.customer_id,
            "position": 0,
            "type": key.peer_type,
            "target": key.peer_target,
            "target_name": request.peer_name,
        },
    )
    return RowValues(participant)
