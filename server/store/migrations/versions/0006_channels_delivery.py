"""channels: account provider, enabled and inactivity timeout; message delivery fields; delivery jobs

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("provider", sa.String(length=16), server_default="", nullable=False))
        batch_op.add_column(sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False))
        batch_op.add_column(
            sa.Column("inactivity_timeout_s", sa.BigInteger(), server_default=sa.text("0"), nullable=False)
        )
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("delivery_status", sa.String(length=16), server_default="", nullable=False))
        batch_op.add_column(sa.Column("error_code", sa.String(length=64), server_default="", nullable=False))
        batch_op.add_column(sa.Column("error_message", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("account_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("channel_reason", sa.String(length=64), server_default="", nullable=False))
    op.create_table(
        "delivery_jobs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("customer_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("account_id", sa.String(length=36), nullable=False),
        sa.Column("allow_fallback", sa.Boolean(), nullable=False),
        sa.Column("tried_channels", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.BigInteger(), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("locked_until", sa.BigInteger(), nullable=True),
        sa.Column("claimed_by", sa.String(length=128), nullable=False),
        sa.Column("attempt_started_at", sa.BigInteger(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("tm_create", sa.BigInteger(), nullable=False),
        sa.Column("tm_update", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["customer_id"], ["customers.id"], name=op.f("fk_delivery_jobs_customer_id_customers")),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"], name=op.f("fk_delivery_jobs_message_id_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_jobs")),
    )
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_delivery_jobs_message_id"), ["message_id"], unique=False)
        batch_op.create_index(
            "ix_delivery_jobs_due",
            ["next_attempt_at"],
            unique=False,
            sqlite_where=sa.text("state IN ('queued', 'sending')"),
            postgresql_where=sa.text("state IN ('queued', 'sending')"),
        )


def downgrade() -> None:
    with op.batch_alter_table("delivery_jobs", schema=None) as batch_op:
        batch_op.drop_index("ix_delivery_jobs_due")
        batch_op.drop_index(batch_op.f("ix_delivery_jobs_message_id"))
    op.drop_table("delivery_jobs")
    with op.batch_alter_table("messages", schema=None) as batch_op:
        for column in ("channel_reason", "account_id", "error_message", "error_code", "delivery_status"):
            batch_op.drop_column(column)
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        for column in ("inactivity_timeout_s", "enabled", "provider"):
            batch_op.drop_column(column)
