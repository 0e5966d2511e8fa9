"""Room matching in SQL (DESIGN.md invariant 2): one open conversation per (customer, channel, self, peer).

The rule (which key, what counts as opening) is domain/rooms.py's; this is
how it is kept race-free.

`match_rooms` serves a whole batch of inbound messages with two statements:
one SELECT for every key's open room, then one multi-row
`INSERT .. ON CONFLICT DO NOTHING RETURNING` for the keys that have none.
Ingest asks only for keys whose sender has no open room (services/ingest.py
routes the others by person), so it inserts first (`expect_new`) and
SELECTs only the keys whose insert was blocked. The partial unique index
`uq_conversations_open_room` makes this race-free across threads and
replicas: a concurrent opener's insert waits for the winner's commit,
inserts nothing, and the opener joins the winner's room.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Connection, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from convhub.server.domain.addresses import Address
from convhub.server.domain.rooms import RoomKey, RoomRequest
from convhub.server.store.db import RowValues, WriteConflict, new_id, now_us
from convhub.server.store.deferred import DeferredWrites
from convhub.server.store.keysets import KeyLookup, UnnestRows
from convhub.server.store.models import Conversation, table
from convhub.server.store.participants import INSERT_ADDRESS, INSERT_PARTICIPANT, address_row
from convhub.server.store.rows import ConversationRow, ParticipantRow

conversations = table(Conversation)


class RoomRaceLost(WriteConflict):
    """The room another opener created was closed before this one could join it; retry the ingest."""


@dataclass(frozen=True, slots=True)
class Room:
    row: ConversationRow
    created: bool  # inserted by this transaction
    peer_participant: ParticipantRow | None  # the participant row opened with the room


OPEN_ROOM = text("state = 'open' AND tm_delete IS NULL")
ROOM_KEY_COLUMNS = ["customer_id", "type", "self_target", "peer_target"]

# The open-room condition is literal SQL, as uq_conversations_open_room's predicate (why: models.predicate_value).
_find_rooms = KeyLookup(conversations, ROOM_KEY_COLUMNS, OPEN_ROOM)
# SQLite: a multi-row INSERT ("insertmanyvalues").
_insert_rooms_sqlite = (
    sqlite_insert(conversations)
    .on_conflict_do_nothing(index_elements=ROOM_KEY_COLUMNS, index_where=OPEN_ROOM)
    .returning(conversations.c.id)
)
# PostgreSQL: the new rooms in one statement (keysets.UnnestRows).
_ROOM_TEXT_COLUMNS = (
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
_room_rows = UnnestRows(*((column, "text") for column in _ROOM_TEXT_COLUMNS))
_insert_rooms_pg = text(
    "INSERT INTO conversations (id, customer_id, account_id, type, self_type, self_target, self_name,"
    " peer_type, peer_target, peer_name, name, detail, owner_type, owner_id, metadata, tags, state,"
    " tm_create, tm_update)"
    f" SELECT r.*, '', '', '', '', '{{}}'::json, '[]'::json, 'open', :now, :now"
    f" FROM {_room_rows.sql}"
    f" ON CONFLICT ({', '.join(ROOM_KEY_COLUMNS)}) WHERE {OPEN_ROOM.text}"
    " DO NOTHING RETURNING id"
)
# Deferred statements of a room's opening, parents first.
PARTICIPANT_INSERTS = (INSERT_PARTICIPANT, INSERT_ADDRESS)


def find_rooms(conn: Connection, keys: Sequence[RoomKey]) -> dict[tuple[str, str, str, str], ConversationRow]:
    """The open rooms for `keys`, by index values."""
    rows = cast("list[ConversationRow]", _find_rooms.fetch(conn, [k.index_values for k in keys]))
    return {(r.customer_id, r.type, r.self_target, r.peer_target): r for r in rows}


def insert_rooms(conn: Connection, values: list[dict[str, Any]], now: int) -> set[str]:
    """Insert the rooms that no open room's key blocks; the ids of those inserted."""
    if conn.dialect.name == "postgresql":
        params: dict[str, Any] = _room_rows.params(values)
        result = conn.execute(_insert_rooms_pg, {**params, "now": now})
    else:
        result = conn.execute(_insert_rooms_sqlite, values)
    return {row.id for row in result.all()}


def match_rooms(
    conn: Connection,
    requests: Sequence[RoomRequest],
    deferred: DeferredWrites,
    contact_ids: Mapping[RoomKey, str] | None = None,
    *,
    expect_new: bool = False,
) -> dict[RoomKey, Room]:
    """The open room for each request's key, opening (with a peer participant) those that have none.

    Room rows are written at once (the unique index must decide now); the
    participant rows go to `deferred`, which must order PARTICIPANT_INSERTS first.
    `contact_ids`: the person each key's peer is (the opened participant's contact).
    `expect_new`: most keys have no open room, so try the INSERT first and
    SELECT only the keys it could not open (one statement instead of two then).
    """
    unique = list({r.key: r for r in requests}.values())
    found = {} if expect_new else find_rooms(conn, [r.key for r in unique])
    missing = [r for r in unique if r.key.index_values not in found]
    rooms = {r.key: Room(found[r.key.index_values], False, None) for r in unique if r.key.index_values in found}
    if not missing:
        return rooms
    now = now_us()
    values = [_room_values(r, now) for r in missing]
    inserted = insert_rooms(conn, values, now)
    lost = [r for r, v in zip(missing, values, strict=True) if v["id"] not in inserted]
    found = find_rooms(conn, [r.key for r in lost]) if lost else {}
    for request, room_values in zip(missing, values, strict=True):
        key = request.key
        if room_values["id"] in inserted:
            row = cast("ConversationRow", RowValues(room_values))
            contact_id = contact_ids.get(key) if contact_ids else None
            rooms[key] = Room(row, True, _open_participant(deferred, request, room_values, now, contact_id))
        elif key.index_values in found:  # the key's room was open already, or a concurrent opener won: join it
            rooms[key] = Room(found[key.index_values], False, None)
        else:  # ...which closed again in between: let the caller retry
            raise RoomRaceLost(key)
    return rooms


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


def _open_participant(
    deferred: DeferredWrites, request: RoomRequest, room: dict[str, Any], now: int, contact_id: str | None
) -> ParticipantRow:
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
        "contact_id": contact_id,
    }
    deferred.add(INSERT_PARTICIPANT, participant)
    if contact_id is None:  # without a person, the participant keeps the address itself
        peer = Address(key.peer_type, key.peer_target, request.peer_name)
        deferred.add(INSERT_ADDRESS, address_row(key.customer_id, participant["id"], 0, peer))
    return cast("ParticipantRow", RowValues(participant))
