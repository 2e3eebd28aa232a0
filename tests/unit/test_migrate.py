"""The migrate step's pieces that need no database: the table a failed statement names, the
pause between lock-timeout retries, the SQL of its timeouts, the refusal of a two-line app role
password."""

from __future__ import annotations

import pytest

from api.db_roles import ensure_app_role
from api.migrate import (
    MAX_PAUSE_SECONDS,
    app_role_password,
    pause_before,
    provision_app_role,
    table_of,
)
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


def test_an_interrupted_rotations_two_line_app_password_is_refused_with_the_fix():
    """Before any connection: the role never gets a password with a newline."""
    settings = Settings(postgres_app_password="the-current-one\nthe-new-one")
    for step in (app_role_password, provision_app_role):
        with pytest.raises(SystemExit) as refusal:
            step(settings)
        message = str(refusal.value)
        assert "POSTGRES_APP_PASSWORD has several lines" in message
        assert "make rotate-secret NAME=postgres_app_password" in message
        assert "again" in message
        assert "the-new-one" not in message


def test_the_app_role_password_is_one_line():
    assert app_role_password(Settings(postgres_app_password="one line")) == "one line"
    with pytest.raises(ValueError, match="newline"):
        ensure_app_role(None, "app_rw", "two\nlines")  # type: ignore[arg-type]
