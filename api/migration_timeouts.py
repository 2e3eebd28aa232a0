"""The migrate step's timeouts: what api/migrations/env.py sets at the start of the upgrade's
transaction (online, and in the SQL `alembic upgrade --sql` writes), and the way one migration
lets a statement run longer on purpose:

    from api.migration_timeouts import statement_timeout

    def upgrade() -> None:
        with statement_timeout(seconds=600):  # a backfill of a large table, known to be slow
            op.execute("UPDATE items SET ...")

The lock timeout is never lifted: a statement that waits for a lock holds every query on that
table behind it. Session-level SET, not SET LOCAL: it lasts through an `autocommit_block()` (an
index built CONCURRENTLY, outside the transaction) and the migrations after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from alembic import op

from core.settings import Settings, get_settings


def timeout_statements(settings: Settings) -> list[str]:
    """SET for both timeouts, from the settings."""
    return [
        f"SET lock_timeout = '{settings.migration_lock_timeout_ms}ms'",
        f"SET statement_timeout = '{settings.migration_statement_timeout_ms}ms'",
    ]


@contextmanager
def statement_timeout(*, seconds: float) -> Iterator[None]:
    """The statements in the block may each run for `seconds`; after it, the setting again. No
    `finally`: after a failed statement the transaction accepts no SET, and the error must show."""
    op.execute(f"SET statement_timeout = '{round(seconds * 1000)}ms'")
    yield
    op.execute(timeout_statements(get_settings())[1])
