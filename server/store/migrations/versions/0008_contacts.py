"""contacts: a customer's people owning addresses (unique per customer) and opt-outs; participants.contact_id

Existing participants are merged into contacts: participants that share an
address (same customer, type, target) are one person, transitively. Each
group becomes one contact whose id, name and address order come from its
earliest participant by (tm_create, id), addresses in order of first
appearance over the group's participants in that order: the same data always
migrates to the same people.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 02:30:00.000000
"""

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "contacts",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("opted_out_channels", sa.JSON(), nullable=False),
        sa.Column("tm_create", sa.BigInteger(), nullable=False),
        sa.Column("tm_update", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name="fk_contacts_customer_id_customers"),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
    )
    op.create_table(
        "contact_addresses",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("contact_id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("target", sa.String(length=320), nullable=False),
        sa.Column("target_name", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"], name="fk_contact_addresses_contact_id_contacts"),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name="fk_contact_addresses_customer_id_customers"),
        sa.PrimaryKeyConstraint("id", name="pk_contact_addresses"),
    )
    with op.batch_alter_table("contact_addresses", schema=None) as batch_op:
        batch_op.create_index("ix_contact_addresses_contact_id", ["contact_id"], unique=False)
        batch_op.create_index("uq_contact_addresses_address", ["customer_id", "type", "target"], unique=True)
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.add_column(sa.Column("contact_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_participants_contact", ["contact_id"], unique=False)
    _merge_participants_into_contacts()


def _merge_participants_into_contacts() -> None:
    conn = op.get_bind()
    participants = sa.table(
        "participants",
        sa.column("id", sa.String),
        sa.column("customer_id", sa.String),
        sa.column("name", sa.String),
        sa.column("tm_create", sa.BigInteger),
        sa.column("contact_id", sa.String),
    )
    addresses = sa.table(
        "participant_addresses",
        sa.column("participant_id", sa.String),
        sa.column("customer_id", sa.String),
        sa.column("position", sa.BigInteger),
        sa.column("type", sa.String),
        sa.column("target", sa.String),
        sa.column("target_name", sa.String),
    )
    people = conn.execute(
        sa.select(
            participants.c.id, participants.c.customer_id, participants.c.name, participants.c.tm_create
        ).order_by(participants.c.tm_create, participants.c.id)
    ).all()
    if not people:
        return
    held: dict[str, list[tuple[str, str, str]]] = {}
    for row in conn.execute(sa.select(addresses).order_by(addresses.c.participant_id, addresses.c.position)).all():
        held.setdefault(row.participant_id, []).append((row.type, row.target, row.target_name))
    parent: dict[str, str] = {p.id: p.id for p in people}
    rank = {p.id: i for i, p in enumerate(people)}

    def root(pid: str) -> str:
        while parent[pid] != pid:
            parent[pid] = parent[parent[pid]]
            pid = parent[pid]
        return pid

    first_holder: dict[tuple[str, str, str], str] = {}
    for person in people:
        for address_type, target, _ in held.get(person.id, ()):
            key = (person.customer_id, address_type, target)
            other = first_holder.setdefault(key, person.id)
            a, b = root(other), root(person.id)
            if a != b:  # the earlier participant's group absorbs the later one
                if rank[a] < rank[b]:
                    parent[b] = a
                else:
                    parent[a] = b
    contacts = sa.table(
        "contacts",
        sa.column("id", sa.String),
        sa.column("customer_id", sa.String),
        sa.column("name", sa.String),
        sa.column("opted_out_channels", sa.JSON),
        sa.column("tm_create", sa.BigInteger),
        sa.column("tm_update", sa.BigInteger),
    )
    contact_addresses = sa.table(
        "contact_addresses",
        sa.column("id", sa.String),
        sa.column("contact_id", sa.String),
        sa.column("customer_id", sa.String),
        sa.column("position", sa.BigInteger),
        sa.column("type", sa.String),
        sa.column("target", sa.String),
        sa.column("target_name", sa.String),
    )
    contact_rows: list[dict[str, object]] = []
    address_rows: list[dict[str, object]] = []
    positions: dict[str, int] = {}
    placed: set[tuple[str, str, str]] = set()
    links: list[dict[str, str]] = []
    for person in people:  # earliest first: a group's root is its earliest participant
        contact_id = root(person.id)
        if contact_id == person.id:
            contact_rows.append(
                {
                    "id": contact_id,
                    "customer_id": person.customer_id,
                    "name": person.name,
                    "opted_out_channels": [],
                    "tm_create": person.tm_create,
                    "tm_update": person.tm_create,
                }
            )
        links.append({"pid": person.id, "cid": contact_id})
    for person in people:
        contact_id = root(person.id)
        for address_type, target, target_name in held.get(person.id, ()):
            key = (person.customer_id, address_type, target)
            if key in placed:
                continue
            placed.add(key)
            position = positions.get(contact_id, 0)
            positions[contact_id] = position + 1
            address_rows.append(
                {
                    "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"convhub:contact-address:{contact_id}:{position}")),
                    "contact_id": contact_id,
                    "customer_id": person.customer_id,
                    "position": position,
                    "type": address_type,
                    "target": target,
                    "target_name": target_name,
                }
            )
    conn.execute(sa.insert(contacts), contact_rows)
    if address_rows:
        conn.execute(sa.insert(contact_addresses), address_rows)
    conn.execute(
        sa.update(participants).where(participants.c.id == sa.bindparam("pid")).values(contact_id=sa.bindparam("cid")),
        links,
    )


def downgrade() -> None:
    with op.batch_alter_table("participants", schema=None) as batch_op:
        batch_op.drop_index("ix_participants_contact")
        batch_op.drop_column("contact_id")
    op.drop_table("contact_addresses")
    op.drop_table("contacts")
