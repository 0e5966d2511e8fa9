"""Room matching (DESIGN.md invariant 2): one open conversation per (customer, channel, self, peer).

`match_room` looks the room up and, if there is none, inserts it inside a
savepoint. The partial unique index `uq_conversations_open_room` is what makes
this race-free across threads and replicas: a concurrent opener loses on the
index, rolls back only its savepoint, and joins the winner's room.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from convhub.server.store.db import RowValues, new_id, now_us
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


@dataclass(frozen=True)
class Room:
    row: Any
    created: bool
    peer_participant: Any | None  # the participant row opened with the room


def find_room(conn: Connection, key: RoomKey) -> Any | None:
    return conn.execute(
        select(conversations).where(
            conversations.c.customer_id == key.customer_id,
            conversations.c.type == key.channel,
            conversations.c.self_target == key.self_target,
            conversations.c.peer_target == key.peer_target,
            conversations.c.state == "open",
            conversations.c.tm_delete.is_(None),
        )
    ).first()


def match_room(conn: Connection, key: RoomKey, *, account_id: str | None, self_name: str, peer_name: str) -> Room:
    """The open room for `key`, opening it (with a participant for the peer) when there is none."""
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
    try:
        with conn.begin_nested():
            conn.execute(insert(conversations).values(values))
    except IntegrityError:
        row = find_room(conn, key)
        if row is None:  # the winner's room closed again in between: let the caller retry
            raise
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
    conn.execute(insert(participants).values(participant))
    conn.execute(
        insert(participant_addresses).values(
            id=new_id(),
            participant_id=participant["id"],
            customer_id=key.customer_id,
            position=0,
            type=key.peer_type,
            target=key.peer_target,
            target_name=peer_name,
        )
    )
    return Room(RowValues(values), created=True, peer_participant=RowValues(participant))
