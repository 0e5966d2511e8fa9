"""Participants as the API shows them: a conversation's view of a person (contact).

A participant's addresses and opt-outs are its contact's, so the same person
reads the same in every conversation; a participant without a contact (none
after migration 0008) shows its own address rows.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from convhub.server.services import resources
from convhub.server.store import contacts, participants
from convhub.server.store.rows import ParticipantRow
from convhub.v1 import participant_pb2


def load_participant(conn: Connection, row: ParticipantRow) -> participant_pb2.Participant:
    contact_id = row.contact_id
    if contact_id:
        contact = contacts.get(conn, row.customer_id, contact_id)
        return resources.participant(
            row, contacts.addresses_of(conn, contact_id), list(contact.opted_out_channels or []), contact_id
        )
    return resources.participant(row, participants.addresses_of(conn, row.id))


def load_participants(conn: Connection, participant_ids: Sequence[str]) -> list[participant_pb2.Participant]:
    return [load_participant(conn, participants.live.by_id(conn, pid)) for pid in participant_ids]
