"""Queries on participants and their addresses (an address row per position, in order)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Connection, bindparam, delete, or_, select, text, update

from convhub.server.domain.addresses import Address
from convhub.server.store.bulk import BulkInsert
from convhub.server.store.db import new_id
from convhub.server.store.keysets import UnnestRows
from convhub.server.store.live_rows import LiveRows
from convhub.server.store.models import ContactAddress, Participant, ParticipantAddress, table
from convhub.server.store.rows import ParticipantAddressRow, ParticipantRow

participants = table(Participant)
participant_addresses = table(ParticipantAddress)
contact_addresses = table(ContactAddress)
live: LiveRows[ParticipantRow] = LiveRows(participants, parent="conversation_id")

INSERT_PARTICIPANT = BulkInsert(participants)
INSERT_ADDRESS = BulkInsert(participant_addresses)
_mark_active = (
    update(participants)
    .where(
        participants.c.conversation_id == bindparam("room_id"),
        participants.c.contact_id == bindparam("peer_contact_id"),
    )
    .values(last_active_channel=bindparam("channel"), tm_last_active=bindparam("now"))
)
# PostgreSQL: one statement for the batch (UnnestRows) instead of one pipelined UPDATE per row.
_marks = UnnestRows(("room_id", "text"), ("peer_contact_id", "text"), ("channel", "text"), ("now", "bigint"))
_mark_active_pg = text(
    "UPDATE participants AS p SET last_active_channel = r.channel, tm_last_active = r.now"
    f" FROM {_marks.sql}"
    " WHERE p.conversation_id = r.room_id AND p.contact_id = r.peer_contact_id"
)


def mark_peers_active(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """The peer's participant (the person the sender's address belongs to) records the channel and time they
    last wrote: rows of room_id, peer_contact_id, channel, now; a later row for the same participant wins."""
    if conn.dialect.name != "postgresql" or len(rows) == 1:
        conn.execute(_mark_active, list(rows))
        return
    conn.execute(_mark_active_pg, _marks.params(rows, last_per=("room_id", "peer_contact_id")))


_addresses_of = (
    select(participant_addresses)
    .where(participant_addresses.c.participant_id == bindparam("participant_id"))
    .order_by(participant_addresses.c.position)
)


def address_row(customer_id: str, participant_id: str, position: int, address: Address) -> dict[str, Any]:
    return {
        "id": new_id(),
        "participant_id": participant_id,
        "customer_id": customer_id,
        "position": position,
        "type": address.type,
        "target": address.target,
        "target_name": address.name,
    }


def addresses_of(conn: Connection, participant_id: str) -> list[ParticipantAddressRow]:
    return cast("list[ParticipantAddressRow]", conn.execute(_addresses_of, {"participant_id": participant_id}).all())


def insert_participant(conn: Connection, values: dict[str, Any]) -> None:
    INSERT_PARTICIPANT(conn, [values])


def update_participant(conn: Connection, participant_id: str, values: dict[str, Any]) -> None:
    conn.execute(update(participants).where(participants.c.id == participant_id).values(values))


def replace_addresses(conn: Connection, customer_id: str, participant_id: str, addresses: Sequence[Address]) -> None:
    conn.execute(delete(participant_addresses).where(participant_addresses.c.participant_id == participant_id))
    INSERT_ADDRESS(conn, [address_row(customer_id, participant_id, i, a) for i, a in enumerate(addresses)])


_holding_address = (
    select(participants)
    .where(
        participants.c.conversation_id == bindparam("room_id"),
        participants.c.tm_delete.is_(None),
        or_(
            participants.c.contact_id.in_(  # the person holding the address (every participant since 0008)
                select(contact_addresses.c.contact_id).where(
                    contact_addresses.c.customer_id == bindparam("customer_id"),
                    contact_addresses.c.type == bindparam("type"),
                    contact_addresses.c.target == bindparam("target"),
                )
            ),
            participants.c.id.in_(  # a participant's own address rows (written by AddParticipant too)
                select(participant_addresses.c.participant_id).where(
                    participant_addresses.c.customer_id == bindparam("customer_id"),
                    participant_addresses.c.type == bindparam("type"),
                    participant_addresses.c.target == bindparam("target"),
                )
            ),
        ),
    )
    .order_by(participants.c.tm_create, participants.c.id)
    .limit(1)
)


_live_in_rooms = (
    select(participants)
    .where(
        participants.c.conversation_id.in_(bindparam("room_ids", expanding=True)), participants.c.tm_delete.is_(None)
    )
    .order_by(participants.c.tm_create, participants.c.id)
)
_addresses_of_many = (
    select(participant_addresses)
    .where(participant_addresses.c.participant_id.in_(bindparam("ids", expanding=True)))
    .order_by(participant_addresses.c.participant_id, participant_addresses.c.position)
)


def live_in_rooms(conn: Connection, room_ids: Sequence[str]) -> list[ParticipantRow]:
    """The live participants of all `room_ids` (one statement), oldest first as `holding_address` ranks them."""
    if not room_ids:
        return []
    return cast("list[ParticipantRow]", conn.execute(_live_in_rooms, {"room_ids": list(room_ids)}).all())


def addresses_of_many(conn: Connection, participant_ids: Sequence[str]) -> dict[str, list[Any]]:
    """Each participant's own address rows in position order (one statement; absent: none)."""
    result: dict[str, list[Any]] = {}
    if participant_ids:
        for row in conn.execute(_addresses_of_many, {"ids": list(participant_ids)}):
            result.setdefault(row.participant_id, []).append(row)
    return result


def holding_address(conn: Connection, customer_id: str, room_id: str, address: Address) -> ParticipantRow | None:
    """The room's live participant holding `address` (the peer a message goes to), if any."""
    params = {"room_id": room_id, "customer_id": customer_id, "type": address.type, "target": address.target}
    return cast("ParticipantRow | None", conn.execute(_holding_address, params).first())
