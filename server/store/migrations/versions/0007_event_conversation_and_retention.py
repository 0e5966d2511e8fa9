"""events: conversation_id (indexed, for per-conversation reads) and a tm_create index (retention sweep)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("conversation_id", sa.String(length=36), nullable=True))
        batch_op.create_index("ix_events_conversation", ["customer_id", "conversation_id", "sequence"], unique=False)
        batch_op.create_index("ix_events_tm_create", ["tm_create"], unique=False)
    _backfill_conversation_ids()


def _backfill_conversation_ids() -> None:
    """Fill conversation_id of events written before this revision, from their payloads."""
    from convhub.server.events.outbox import conversation_of
    from convhub.v1 import event_pb2

    events = sa.table(
        "events",
        sa.column("customer_id", sa.String),
        sa.column("sequence", sa.BigInteger),
        sa.column("payload", sa.LargeBinary),
        sa.column("conversation_id", sa.String),
    )
    conn = op.get_bind()
    fill = (
        sa.update(events)
        .where(events.c.customer_id == sa.bindparam("c"), events.c.sequence == sa.bindparam("s"))
        .values(conversation_id=sa.bindparam("conversation_id"))
    )
    page = (
        sa.select(events.c.customer_id, events.c.sequence, events.c.payload)
        .where(events.c.conversation_id.is_(None))
        .order_by(events.c.customer_id, events.c.sequence)
        .limit(2000)
    )
    after: tuple[str, int] | None = None
    while True:  # keyset pages, so a large log is never held in memory at once
        query = page if after is None else page.where(sa.tuple_(events.c.customer_id, events.c.sequence) > after)
        rows = conn.execute(query).all()
        if not rows:
            return
        after = (rows[-1].customer_id, rows[-1].sequence)
        updates = []
        for row in rows:
            conversation_id = conversation_of(event_pb2.Event.FromString(row.payload))
            if conversation_id:
                updates.append({"c": row.customer_id, "s": row.sequence, "conversation_id": conversation_id})
        if updates:
            conn.execute(fill, updates)


def downgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index("ix_events_tm_create")
        batch_op.drop_index("ix_events_conversation")
        batch_op.drop_column("conversation_id")
