"""accounts.widget_key: the public key a web chat page embeds to open visitor sessions

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 02:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # NULL for accounts of other channels (NULLs never collide in a unique index).
    with op.batch_alter_table("accounts") as batch:
        batch.add_column(sa.Column("widget_key", sa.String(length=64), nullable=True))
        batch.create_index("uq_accounts_widget_key", ["widget_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("accounts") as batch:
        batch.drop_index("uq_accounts_widget_key")
        batch.drop_column("widget_key")
