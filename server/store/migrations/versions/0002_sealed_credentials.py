"""accounts.credentials holds sealed text (store/secrets.py) instead of plaintext JSON

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 23:00:00.000000

Rows written before this keep their JSON text here; `convhub serve` seals
them on its next start, once it has a key (store/sealed_columns.py).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.alter_column(
            "credentials",
            existing_type=sa.JSON(),
            type_=sa.Text(),
            existing_nullable=False,
            postgresql_using="credentials::text",
        )


def downgrade() -> None:
    # A migration has no key to open sealed credentials, and JSON cannot hold them as they are.
    raise NotImplementedError("0002 cannot be downgraded: accounts.credentials holds sealed secrets")
