"""cache debts

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_debts",
        # The item's id, not a sequence of its own: one row an item, however many writes.
        sa.Column("item_id", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column(
            "owed_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
    )


def downgrade() -> None:
    op.drop_table("cache_debts")
