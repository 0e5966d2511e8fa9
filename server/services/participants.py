"""Participants of a conversation: each is a person (contact) whose addresses are unique per customer.

Adding a participant whose addresses (some or all) are already a person's
makes that person a participant here (their other addresses come along); an
address list spanning two people, or naming a person already taking part,
answers ALREADY_EXISTS naming the holder. Updating addresses rewrites the
person's addresses; one held by another person answers ALREADY_EXISTS.
The unique index on contact_addresses decides races: the loser retries once
and then sees the winner's rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from convhub.server.config import Settings
from convhub.server.domain.addresses import Address
from convhub.server.domain.participants import participant_addresses
from convhub.server.domain.violations import RuleViolation
from convhub.server.errors import AlreadyExists
from convhub.server.events.outbox import append_events
from convhub.server.services.errors import found, invalid_argument
from convhub.server.services.people import load_participant
from convhub.server.store import contacts, conversations, idempotency, participants
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
    opted_out_channels: Sequence[str] = ()  # stored channel names


def _load(conn: Connection, row: ParticipantRow) -> participant_pb2.Participant:
    return load_participant(conn, row)


def address_taken(conn: Connection, customer_id: str, field: str, address: Address, holder: str) -> AlreadyExists:
    """ALREADY_EXISTS naming the person holding `address` (and one of their participants, if any)."""
    participant_ids = contacts.live_participant_ids(conn, holder)
    named = f"participant {participant_ids[0]} (contact {holder})" if participant_ids else f"contact {holder}"
    return AlreadyExists(
        f"{field}: {address.type}:{address.target} already belongs to {named}",
        reason="ADDRESS_TAKEN",
        metadata={
            "field": field,
            "contact_id": holder,
            "participant_id": participant_ids[0] if participant_ids else "",
        },
    )


def _with_new(current: Sequence[Address], added: Sequence[Address]) -> list[Address]:
    have = {(a.type, a.target) for a in current}
    result = list(current)
    for address in added:
        if (address.type, address.target) not in have:
            have.add((address.type, address.target))
            result.append(address)
    return result


def _contact_addresses(conn: Connection, contact_id: str) -> list[Address]:
    return [Address(r.type, r.target, r.target_name) for r in contacts.addresses_of(conn, contact_id)]


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
        field = "participant.addresses"
        addresses = self._normalised(field, new.addresses)
        with self.db.writer.begin() as conn:
            found(
                conversations.live.get(conn, new.customer_id, new.conversation_id), "conversation", new.conversation_id
            )
            if new.request_id:
                existing = idempotency.lookup(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id)
                if existing:
                    return _load(conn, participants.live.by_id(conn, existing))
            held = contacts.holders(conn, [contacts.address_key(new.customer_id, a) for a in addresses])
            contact_id: str | None = None
            for i, address in enumerate(addresses):
                holder = held.get(contacts.address_key(new.customer_id, address))
                if holder is None:
                    continue
                if contact_id is None:
                    contact_id = holder
                elif holder != contact_id:
                    raise address_taken(conn, new.customer_id, f"{field}[{i}]", address, holder)
            if contact_id is None:
                contact_id = contacts.insert_contact(conn, new.customer_id, new.name)
                contacts.replace_addresses(conn, new.customer_id, contact_id, addresses)
            else:
                here = contacts.participant_in(conn, contact_id, new.conversation_id)
                if here is not None:
                    raise AlreadyExists(
                        f"{field}: the person (contact {contact_id}) already takes part as participant {here}",
                        reason="PARTICIPANT_EXISTS",
                        metadata={"field": field, "contact_id": contact_id, "participant_id": here},
                    )
                merged = _with_new(_contact_addresses(conn, contact_id), addresses)
                contacts.replace_addresses(conn, new.customer_id, contact_id, merged)
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
                    "contact_id": contact_id,
                },
            )
            participants.replace_addresses(conn, new.customer_id, participant_id, addresses)
            if new.request_id:
                idempotency.record(conn, new.customer_id, IDEMPOTENCY_METHOD, new.request_id, participant_id)
            result = _load(conn, participants.live.by_id(conn, participant_id))
            append_events(conn, new.customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_ADDED, result)])
        return result

    @retry_on_conflict
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
            row = found(
                participants.live.get(conn, patch.customer_id, patch.participant_id, patch.conversation_id),
                "participant",
                patch.participant_id,
            )
            contact_id = row.contact_id
            changed = bool(values)
            if new_addresses is not None:
                held = contacts.holders(conn, [contacts.address_key(patch.customer_id, a) for a in new_addresses])
                for i, address in enumerate(new_addresses):
                    holder = held.get(contacts.address_key(patch.customer_id, address))
                    if holder is not None and holder != contact_id:
                        raise address_taken(conn, patch.customer_id, f"participant.addresses[{i}]", address, holder)
                if contact_id is None:
                    contact_id = contacts.insert_contact(conn, patch.customer_id, row.name)
                    values["contact_id"] = contact_id
                contacts.replace_addresses(conn, patch.customer_id, contact_id, new_addresses)
                participants.replace_addresses(conn, patch.customer_id, patch.participant_id, new_addresses)
                changed = True
            if "opted_out_channels" in patch.fields:
                if contact_id is None:
                    contact_id = contacts.insert_contact(conn, patch.customer_id, row.name)
                    contacts.replace_addresses(conn, patch.customer_id, contact_id, [])
                    values["contact_id"] = contact_id
                contacts.set_opted_out_channels(conn, contact_id, sorted(set(patch.opted_out_channels)))
                changed = True
            if changed:
                values["tm_update"] = now_us()
                participants.update_participant(conn, patch.participant_id, values)
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
