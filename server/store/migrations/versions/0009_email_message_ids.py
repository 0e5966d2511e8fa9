"""email: messages by (customer_id, transaction_id), so a reply's In-Reply-To/References find our message

Outbound email keeps the Message-ID we gave it in `transaction_id` (the
provider message id, as for every channel); inbound email keeps the
sender's. A reply may arrive on another account than the one we sent from,
so the lookup cannot go through uq_messages_provider_id (scoped per account).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 02:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"  # rechained after people's 0008 (contacts)
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index("ix_messages_customer_transaction", ["customer_id", "transaction_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index("ix_messages_customer_transaction")
