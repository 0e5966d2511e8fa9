"""Per-channel opt-outs of a person (SMS STOP/START, an email unsubscribe link, the API).

An opt-out belongs to the contact holding the address, so it holds in every
conversation the person is in. Opting out an address nobody holds yet gives
it a contact first: the choice must outlive the first conversation.
"""

from __future__ import annotations

from sqlalchemy import Connection

from convhub.server.domain.addresses import Address, normalize_address
from convhub.server.domain.channels import CHANNEL_ADDRESS_TYPE
from convhub.server.domain.opt_outs import with_opt_out
from convhub.server.domain.violations import RuleViolation
from convhub.server.events.outbox import append_events
from convhub.server.services.errors import invalid_argument
from convhub.server.services.people import load_participants
from convhub.server.store import contacts
from convhub.server.store.db import Database
from convhub.v1 import event_pb2

DEFAULT_REGION = "US"  # only for a tel target not already in E.164 (ingest always passes E.164)


def set_opt_out(db: Database, *, customer_id: str, address: Address | str, channel: str, opted_out: bool) -> None:
    """Opt the person holding `address` out of (or back into) `channel` (a stored channel name: `message`, `email`).

    A bare string is an email address (what the email unsubscribe link
    carries). Idempotent; a change writes PARTICIPANT_UPDATED for each
    conversation the person is in. INVALID_ARGUMENT for an unknown channel or
    a bad address.
    """
    if isinstance(address, str):
        address = Address("email", address)
    if channel not in CHANNEL_ADDRESS_TYPE:
        raise invalid_argument(RuleViolation("channel", f"unknown channel {channel!r}"))
    try:
        address = normalize_address("address", address, expected_type=None, default_region=DEFAULT_REGION)
    except RuleViolation as exc:
        raise invalid_argument(exc) from None
    with db.writer.begin() as conn:
        set_opt_out_in(conn, customer_id=customer_id, address=address, channel=channel, opted_out=opted_out)


def set_opt_out_in(conn: Connection, *, customer_id: str, address: Address, channel: str, opted_out: bool) -> bool:
    """set_opt_out inside the caller's transaction, for a normalised address; True if anything changed."""
    contact_id = contacts.ensure_contacts(conn, [(customer_id, address)])[contacts.address_key(customer_id, address)]
    return set_contact_opt_out(conn, customer_id, contact_id, channel, opted_out)


def set_contact_opt_out(conn: Connection, customer_id: str, contact_id: str, channel: str, opted_out: bool) -> bool:
    """Record the choice on the contact and announce it on each of its participants; True if it changed."""
    row = contacts.get(conn, customer_id, contact_id)
    current = list(row.opted_out_channels or [])
    changed = with_opt_out(current, channel, opted_out)
    if changed == current:
        return False
    contacts.set_opted_out_channels(conn, contact_id, changed)
    updated = load_participants(conn, contacts.live_participant_ids(conn, contact_id))
    if updated:
        append_events(conn, customer_id, [(event_pb2.EVENT_TYPE_PARTICIPANT_UPDATED, p) for p in updated])
    return True
