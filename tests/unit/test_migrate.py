"""The migrate step's pieces that need no database: the table a failed statement names, the
pause between lock-timeout retries, the SQL of its timeouts."""

from __future__ import annotations

import pytest

from api.migrate import MAX_PAUSE_SECONDS, pause_before, table_of
from api.migration_timeouts import timeout_statements
from core.settings import Settings


@pytest.mark.parametrize(
    ("statement", "table"),
    [
        ("ALTER TABLE items ADD COLUMN sku TEXT", "items"),
        ('ALTER TABLE ONLY "items" DROP COLUMN x', "items"),
        ("ALTER TABLE IF EXISTS public.jobs ADD COLUMN y INT", "public.jobs"),
        ("CREATE INDEX ix_items_name ON items (name)", "items"),
        ("CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS ix ON ONLY jobs (seed)", "jobs"),
        ("UPDATE items SET name = 'x'", "items"),
        ("LOCK TABLE cache_debts IN ACCESS EXCLUSIVE MODE", "cache_debts"),
        ("SELECT 1", None),
        (None, None),
    ],
)
def test_table_of_names_the_table_a_statement_locks(statement, table):
    assert table_of(statement) == table


def test_pauses_grow_and_are_bounded():
    assert [pause_before(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert pause_before(50) == MAX_PAUSE_SECONDS


def test_timeouts_come_from_the_settings():
    settings = Settings(migration_lock_timeout_ms=1500, migration_statement_timeout_ms=9000)
    assert timeout_statements(settings) == [
        "SET lock_timeout = '1500ms'",
        "SET statement_timeout = '9000ms'",
    ]
