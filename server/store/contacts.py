"""Contacts in SQL: a customer's people, each owning addresses (unique per customer) and opt-outs.

`ensure_contacts` gives every address a contact race-free: new contacts are
inserted, then their addresses with `ON CONFLICT DO NOTHING` against the
unique index `uq_contact_addresses_address`; a concurrent writer that claimed
an address first wins (ours waits for its commit on PostgreSQL), the contact
we made for it is deleted again and the winner's is used. Rows are written in
key order so two batches never wait on each other crosswise.

`person_rooms` is the one batched lookup room matching adds to ingest: for
each address, its contact and that contact's open conversations with their
latest activity (last message time, else the conversation's creation).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    ARRAY,
    Connection,
    Select,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy import cast as sql_cast

from convhub.server.domain.addresses import Address
from convhub.server.store.bulk import BulkInsert
from convhub.server.store.db import new_id, now_us
from convhub.server.store.keysets import KeyLookup, UnnestRows, padded
from convhub.server.store.models import (
    Contact,
    ContactAddress,
    Conversation,
    Message,
    Participant,
    predicate_value,
    table,
)
from convhub.server.store.rows import ConversationRow

contacts = table(Contact)
contact_addresses = table(ContactAddress)
_insert_contacts = BulkInsert(contacts)
_insert_addresses = BulkInsert(contact_addresses)
_conversations = table(Conversation)
_participants = table(Participant)
_messages = table(Message)

AddressKey = tuple[str, str, str]  # (customer_id, type, target)
ADDRESS_KEY_COLUMNS = ["customer_id", "type", "target"]
# PostgreSQL: address rows in one statement (UnnestRows), each skipped when another contact holds the address.
_address_rows = UnnestRows(
    *(("id", "text"), ("contact_id", "text"), ("customer_id", "text"), ("position", "bigint")),
    *(("type", "text"), ("target", "text"), ("target_name", "text")),
)
_claim_addresses_pg = text(
    f"INSERT INTO contact_addresses ({', '.join(_address_rows.names)})"
    f" SELECT r.* FROM {_address_rows.sql}"
    " ON CONFLICT (customer_id, type, target) DO NOTHING RETURNING contact_id"
)
_find_addresses = KeyLookup(contact_addresses, ADDRESS_KEY_COLUMNS)


def address_key(customer_id: str, address: Address) -> AddressKey:
    return (customer_id, address.type, address.target)


@dataclass(slots=True)
class PersonRooms:
    """An address's contact and the contact's open conversations (their activity is read only when
    a person has several: see `activity`)."""

    contact_id: str
    rooms: list[ConversationRow] = field(default_factory=list)


def holders(conn: Connection, keys: Sequence[AddressKey]) -> dict[AddressKey, str]:
    """The contact holding each address that has one (one index probe per key)."""
    rows = _find_addresses.fetch(conn, list(dict.fromkeys(keys)))
    return {(r.customer_id, r.type, r.target): r.contact_id for r in rows}


def ensure_contacts(
    conn: Connection, wanted: Sequence[tuple[str, Address]], *, known_missing: bool = False
) -> dict[AddressKey, str]:
    """The contact of each (customer_id, address), creating a one-address contact for those without one.

    `known_missing`: the caller just looked them up and found none (skips that lookup).
    """
    keys = sorted({address_key(c, a): (c, a) for c, a in wanted}.items())
    if not keys:
        return {}
    found: dict[AddressKey, str] = {} if known_missing else holders(conn, [k for k, _ in keys])
    missing = [(k, v) for k, v in keys if k not in found]
    if not missing:
        return found
    now = now_us()
    new_contacts = [
        {
            "id": new_id(),
            "customer_id": customer_id,
            "name": address.name,
            "opted_out_channels": [],
            "tm_create": now,
            "tm_update": now,
        }
        for _, (customer_id, address) in missing
    ]
    _insert_contacts(conn, new_contacts)
    rows = [
        _address_row(str(contact["id"]), customer_id, 0, address)
        for contact, (_, (customer_id, address)) in zip(new_contacts, missing, strict=True)
    ]
    claimed = _insert_addresses_claiming(conn, rows)
    lost = [contact["id"] for contact in new_contacts if contact["id"] not in claimed]
    if lost:
        conn.execute(delete(contacts).where(contacts.c.id.in_(lost)))
        found.update(holders(conn, [k for k, _ in missing]))
    for contact, (key, _) in zip(new_contacts, missing, strict=True):
        if contact["id"] in claimed:
            found[key] = contact["id"]
    return found


def _insert_addresses_claiming(conn: Connection, rows: list[dict[str, Any]]) -> set[str]:
    """Insert address rows unless another contact holds the address; the contact ids whose rows went in.

    SQLite: a write transaction holds the database lock from BEGIN, so the
    lookup the caller just made is still true: a plain INSERT claims them all.
    """
    if conn.dialect.name != "postgresql":
        _insert_addresses(conn, rows)
        return {row["contact_id"] for row in rows}
    # One statement, rows in key order (the caller sorts them); only rows that went in come back.
    return set(conn.execute(_claim_addresses_pg, _address_rows.params(rows)).scalars())


def _address_row(contact_id: str, customer_id: str, position: int, address: Address) -> dict[str, Any]:
    return {
        "id": new_id(),
        "contact_id": contact_id,
        "customer_id": customer_id,
        "position": position,
        "type": address.type,
        "target": address.target,
        "target_name": address.name,
    }


def activity(conn: Connection, rooms: Sequence[ConversationRow]) -> dict[str, int]:
    """Each room's latest activity: its last message's time, else its creation (one grouped statement)."""
    if not rooms:
        return {}
    latest: dict[str, int] = dict(
        conn.execute(
            select(_messages.c.conversation_id, func.max(_messages.c.tm_create))
            .where(_messages.c.conversation_id.in_([r.id for r in rooms]))
            .group_by(_messages.c.conversation_id)
        ).all()
    )
    return {r.id: latest.get(r.id) or r.tm_create for r in rooms}


def _person_rooms_base() -> Select[Any]:
    ca = contact_addresses
    return select(
        ca.c.customer_id.label("key_customer_id"),
        ca.c.type.label("key_type"),
        ca.c.target.label("key_target"),
        ca.c.contact_id,
        *_conversations.c,
    ).select_from(
        ca.outerjoin(
            _participants,
            and_(_participants.c.contact_id == ca.c.contact_id, _participants.c.tm_delete.is_(None)),
        ).outerjoin(
            _conversations,
            and_(
                _conversations.c.id == _participants.c.conversation_id,
                _conversations.c.state == predicate_value("open"),  # uq_conversations_open_room's
                _conversations.c.tm_delete.is_(None),
            ),
        )
    )


@functools.lru_cache(maxsize=1)
def _person_rooms_postgresql() -> Select[Any]:
    """One statement for any number of keys: one array per key column through unnest (see keysets.py)."""
    ca = contact_addresses
    k = (
        func.unnest(*(sql_cast(bindparam(f"key_{c}"), ARRAY(String)) for c in ADDRESS_KEY_COLUMNS))
        .table_valued(*ADDRESS_KEY_COLUMNS)
        .render_derived(name="k", with_types=False)
    )
    return (
        _person_rooms_base()
        .where(ca.c.customer_id == k.c.customer_id, ca.c.type == k.c.type, ca.c.target == k.c.target)
        .select_from(k)
    )


@functools.lru_cache(maxsize=128)
def _person_rooms_sqlite(count: int) -> Select[Any]:
    """One OR term per key (one index search each on SQLite), built once per padded batch size (keysets.padded)."""
    ca = contact_addresses
    any_key = or_(
        *(
            and_(
                ca.c.customer_id == bindparam(f"k_{i}_0"),
                ca.c.type == bindparam(f"k_{i}_1"),
                ca.c.target == bindparam(f"k_{i}_2"),
            )
            for i in range(count)
        )
    )
    return _person_rooms_base().where(any_key)


def _person_rooms_query(conn: Connection, keys: Sequence[AddressKey]) -> tuple[Select[Any], dict[str, Any]]:
    if conn.dialect.name == "postgresql":
        per_column = list(zip(*keys, strict=True))
        arrays = {f"key_{c}": list(v) for c, v in zip(ADDRESS_KEY_COLUMNS, per_column, strict=True)}
        return _person_rooms_postgresql(), arrays
    keys = padded(keys)
    params = {f"k_{i}_{j}": value for i, key in enumerate(keys) for j, value in enumerate(key)}
    return _person_rooms_sqlite(len(keys)), params


def person_rooms(conn: Connection, keys: Iterable[AddressKey]) -> dict[AddressKey, PersonRooms]:
    """For each address held by a contact: the contact and its open conversations (one statement)."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    query, params = _person_rooms_query(conn, unique)
    result: dict[AddressKey, PersonRooms] = {}
    for row in conn.execute(query, params).all():
        key = (row.key_customer_id, row.key_type, row.key_target)
        person = result.setdefault(key, PersonRooms(row.contact_id))
        if row.id is not None:
            person.rooms.append(cast("ConversationRow", row))
    return result


def get(conn: Connection, customer_id: str, contact_id: str) -> Any:
    return conn.execute(
        select(contacts).where(contacts.c.id == contact_id, contacts.c.customer_id == customer_id)
    ).first()


_by_ids = select(contacts).where(contacts.c.id.in_(bindparam("ids", expanding=True)))
_addresses_of_many = (
    select(contact_addresses)
    .where(contact_addresses.c.contact_id.in_(bindparam("ids", expanding=True)))
    .order_by(contact_addresses.c.contact_id, contact_addresses.c.position, contact_addresses.c.id)
)


def by_ids(conn: Connection, contact_ids: Iterable[str]) -> dict[str, Any]:
    """The contacts with these ids (one statement); the caller checks their customer."""
    ids = list(dict.fromkeys(contact_ids))
    return {r.id: r for r in conn.execute(_by_ids, {"ids": ids})} if ids else {}


def addresses_of_many(conn: Connection, contact_ids: Iterable[str]) -> dict[str, list[Any]]:
    """Each contact's address rows in `addresses_of` order (one statement; absent: none)."""
    ids = list(dict.fromkeys(contact_ids))
    result: dict[str, list[Any]] = {}
    if ids:
        for row in conn.execute(_addresses_of_many, {"ids": ids}):
            result.setdefault(row.contact_id, []).append(row)
    return result


def addresses_of(conn: Connection, contact_id: str) -> list[Any]:
    return list(
        conn.execute(
            select(contact_addresses)
            .where(contact_addresses.c.contact_id == contact_id)
            .order_by(contact_addresses.c.position, contact_addresses.c.id)
        ).all()
    )


def set_opted_out_channels(conn: Connection, contact_id: str, channels: Sequence[str]) -> None:
    conn.execute(
        update(contacts)
        .where(contacts.c.id == contact_id)
        .values(opted_out_channels=list(channels), tm_update=now_us())
    )


def insert_contact(conn: Connection, customer_id: str, name: str = "") -> str:
    now = now_us()
    contact_id = new_id()
    conn.execute(
        insert(contacts),
        {
            "id": contact_id,
            "customer_id": customer_id,
            "name": name,
            "opted_out_channels": [],
            "tm_create": now,
            "tm_update": now,
        },
    )
    return contact_id


def replace_addresses(conn: Connection, customer_id: str, contact_id: str, addresses: Sequence[Address]) -> None:
    """The contact's addresses become `addresses` (the caller checked that no other contact holds one)."""
    conn.execute(delete(contact_addresses).where(contact_addresses.c.contact_id == contact_id))
    if addresses:
        conn.execute(
            insert(contact_addresses),
            [_address_row(contact_id, customer_id, i, a) for i, a in enumerate(addresses)],
        )


def live_participant_ids(conn: Connection, contact_id: str) -> list[str]:
    return list(
        conn.scalars(
            select(_participants.c.id)
            .where(_participants.c.contact_id == contact_id, _participants.c.tm_delete.is_(None))
            .order_by(_participants.c.tm_create, _participants.c.id)
        )
    )


def participant_in(conn: Connection, contact_id: str, conversation_id: str) -> str | None:
    """The contact's live participant in the conversation, if it takes part."""
    return conn.scalar(
        select(_participants.c.id)
        .where(
            _participants.c.contact_id == contact_id,
            _participants.c.conversation_id == conversation_id,
            _participants.c.tm_delete.is_(None),
        )
        .order_by(_participants.c.tm_create, _participants.c.id)
        .limit(1)
    )
