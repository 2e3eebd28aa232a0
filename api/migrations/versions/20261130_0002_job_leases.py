"""job leases

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None
# The migration lint (docs/deploy.md): the index below is built in the transaction, on purpose.
lint_accepts = {
    "require-concurrent-index-creation": "jobs was days old (0001), small wherever this first ran",
}


def upgrade() -> None:
    # Nullable, no default: instant on a large table (no rewrite), and old rows need no value.
    op.add_column("jobs", sa.Column("worker", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
    # Only running rows are indexed; building it still reads the table once, blocking job writes
    # meanwhile (about a second per million jobs).
    op.create_index(
        "ix_jobs_running_heartbeat",
        "jobs",
        ["heartbeat_at"],
        postgresql_where=sa.text("state = 'running'"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobs_running_heartbeat", table_name="jobs")
    op.drop_column("jobs", "heartbeat_at")
    op.drop_column("jobs", "worker")
