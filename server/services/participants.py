"""Participants of a conversation, each holding one or more addresses (any channel's)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.domain.participants import participant_addresses
from convhub.server.domain.violations import RuleViolation
from convhub.server.events.outbox import append_events
from convhub.server.services import resources
from convhub.server.services.errors import found, invalid_argument
from convhub.server.store import conversations, idempotency, participants
from convhub.server.store.db import Database, new_id, now_us, retry_on_conflict
from convhub.server.store.pages import Page
from convhub.server.store.rows import ParticipantRow
from convhub.v1 import event_pb2, participant_pb2

IDEMPOTENCY_METHOD = "AddParticipant"  # the request-id namespace (stored: do not rename)


@dataclass(frozen=True)
class NewParticipant:
    customer_id: str
    conversation_id: str
    addresses: Sequence[Address]  # normalised here; each needs its type
    name: str = ""
    preferred_channel: str = ""  # stored channel name, "" for none
    request_id: str | None = None


@dataclass(frozen=True)
class ParticipantPatch:
    """An update (AIP-134): only `fields` are written."""

    customer_id: str
    conversation_id: str
    participant_id: str
    fields: frozenset[str]
    name: str = ""
    preferred_channel: str = ""
    addresses: Sequence[Address] = ()


def _load(conn: Connection, row: ParticipantRow) -> participant_pb2.Participant:
    return resources.participant(row, participants.addresses_of(conn, row.id))


class ParticipantService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings

    def _normalised(self, field: str, addresses: Sequence[Address]) -> list[Address]:
        try:
            return participant_addresses(field, addresses, default_region=self.settings.default_region)
        except RuleViolation as exc:
            raise invalid_argument(exc) from None

    def list(self, customer_id: str, conversation_id: str, page: Page) -> tuple[list[participant_pb2.Participant], str]:
        with self.db.read() as conn:
            found(conversations.live.get(conn, customer_id, conversation_id), "conversation", conversation_id)
            rows, token = participants.live.page(conn, page, customer_id, conversation_id)
            return [_load(conn, r) for r in rows], token

    @retry_on_conflict
    def add(self, new: NewParticipant) -> participant_pb2.Participant:
        addresses = self._normalised("participant.addresses", new.addresses)
        with self.db.writer.begin() as conn:
            found(
                conversations.live.get(conn, new.customer_id, new.conversation_id), "conversation", new.conversation_id
            )
            if new.request_id:
                existing = idempotency.lookup(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id)
                if existing:
                    return _load(conn, participants.live.by_id(conn, existing))
            now = now_us()
            participant_id = new_id()
            participants.insert_participant(
                conn,
                {
                    "id": participant_id,
                    "customer_id": new.customer_id,
                    "conversation_id": new.conversation_id,
                    "name": new.name,
                    "preferred_channel": new.preferred_channel,
                    "last_active_channel": "",
                    "tm_create": now,
                    "tm_update": now,
                },
            )
            participants.replace_addresses(conn, new.customer_id, participant_id, addresses)
            if new.request_id:
                idempotency.record(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id, participant_id)
            result = _load(conn, participants.live.by_id(conn, participant_id))
            append_events(conn, new.customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_ADDED, result)])
        return result

    def update(self, patch: ParticipantPatch) -> participant_pb2.Participant:
        values: dict[str, object] = {}
        if "name" in patch.fields:
            values["name"] = patch.name
        if "preferred_channel" in patch.fields:
            values["preferred_channel"] = patch.preferred_channel
        new_addresses = None
        if "addresses" in patch.fields:
            new_addresses = self._normalised("participant.addresses", patch.addresses)
        with self.db.writer.begin() as conn:
            found(
                participants.live.get(conn, patch.customer_id, patch.participant_id, patch.conversation_id),
                "participant",
                patch.participant_id,
            )
            changed = bool(values) or new_addresses is not None
            if changed:
                values["tm_update"] = now_us()
                participants.update_participant(conn, patch.participant_id, values)
            if new_addresses is not None:
                participants.replace_addresses(conn, patch.customer_id, patch.participant_id, new_addresses)
            result = _load(conn, participants.live.by_id(conn, patch.participant_id))
            if changed:
                append_events(conn, patch.customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_UPDATED, result)])
        return result

    def remove(self, customer_id: str, conversation_id: str, participant_id: str) -> participant_pb2.Participant:
        with self.db.writer.begin() as conn:
            row = found(
                participants.live.soft_delete(conn, customer_id, participant_id, conversation_id),
                "participant",
                participant_id,
            )
            result = _load(conn, row)
            append_events(conn, customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_REMOVED, result)])
        return result
