"""Room matching (DESIGN.md invariant 2): one open conversation per (customer, channel, self, peer).

`match_room` looks the room up and, if there is none, inserts it with
`ON CONFLICT DO NOTHING` on the partial unique index `uq_conversations_open_room`.
The index is what makes this race-free across threads and replicas: a
concurrent opener's insert waits for the winner's commit, inserts nothing,
and the opener joins the winner's room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from convhub.server.store.db import RowValues, WriteConflict, new_id, now_us
from convhub.server.store.deferred import DeferredWrites
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


class RoomRaceLost(WriteConflict):
    """The room another opener created was closed before this one could join it; retry the ingest."""


@dataclass(frozen=True)
class Room:
    row: Any
    created: bool
    peer_participant: Any | None  # the participant row opened with the room


OPEN_ROOM = text("state = 'open' AND tm_delete IS NULL")
ROOM_KEY_COLUMNS = ["customer_id", "type", "self_target", "peer_target"]

_find_room = select(conversations).where(
    conversations.c.customer_id == bindparam("customer_id"),
    conversations.c.type == bindparam("channel"),
    conversations.c.self_target == bindparam("self_target"),
    conversations.c.peer_target == bindparam("peer_target"),
    conversations.c.state == "open",
    conversations.c.tm_delete.is_(None),
)
_insert_room = {
    dialect: insert_(conversations)
    .on_conflict_do_nothing(index_elements=ROOM_KEY_COLUMNS, index_where=OPEN_ROOM)
    .returning(conversations.c.id)
    for dialect, insert_ in (("postgresql", pg_insert), ("sqlite", sqlite_insert))
}
_insert_participant = insert(participants)
_insert_address = insert(participant_addresses)
# Deferred statements of a room's opening, parents first.
PARTICIPANT_INSERTS = (_insert_participant, _insert_address)


def find_room(conn: Connection, key: RoomKey) -> Any | None:
    params = {
        "customer_id": key.customer_id,
        "channel": key.channel,
        "self_target": key.self_target,
        "peer_target": key.peer_target,
    }
    return conn.execute(_find_room, params).first()


def match_room(
    conn: Connection, key: RoomKey, *, account_id: str | None, self_name: str, peer_name: str, deferred: DeferredWrites
) -> Room:
    """The open room for `key`, opening it (with a participant for the peer) when there is none.

    The room row is written at once (the unique index must decide now); the
    participant rows go to `deferred`, which must order PARTICIPANT_INSERTS first.
    """
    row = find_room(conn, key)
    if row is not None:
        return Room(row, created=False, peer_participant=None)
    now = now_us()
    values = {
        "id": new_id(),
        "customer_id": key.customer_id,
        "account_id": account_id,
        "name": "",
        "detail": "",
        "type": key.channel,
        "self_type": key.self_type,
        "self_target": key.self_target,
        "self_name": self_name,
        "peer_type": key.peer_type,
        "peer_target": key.peer_target,
        "peer_name": peer_name,
        "owner_type": "",
        "owner_id": "",
        "metadata": {},
        "tags": [],
        "state": "open",
        "tm_create": now,
        "tm_update": now,
        "tm_delete": None,
    }
    if conn.execute(_insert_room[conn.dialect.name], values).first() is None:
        row = find_room(conn, key)  # a concurrent opener won: join its room
        if row is None:  # ...which closed again in between: let the caller retry
            raise RoomRaceLost(key)
        return Room(row, created=False, peer_participant=None)
    participant = {
        "id": new_id(),
        "customer_id": key.customer_id,
        "conversation_id": values["id"],
        "name": peer_name,
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
            "target_name": peer_name,
        },
    )
    return Room(RowValues(values), created=True, peer_participant=RowValues(participant))
