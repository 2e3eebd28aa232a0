"""The migration lint (python -m api.migration_lint, a step of make lint): the kit's own migrations
pass; each unsafe form, written as a new migration in a copy of the migrations folder, is caught
by its squawk rule; lint_accepts lets one through on purpose, with a reason; the documented safe
forms (a nullable column, an index built CONCURRENTLY outside the transaction, a long statement
allowed on purpose) pass."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory

from api import migration_lint
from api.migration_lint import rendered_sql
from api.readiness import head_revision

ROOT = Path(__file__).resolve().parents[2]

MIGRATION = '''"""lint test"""

import sqlalchemy as sa
from alembic import op

from api.migration_timeouts import statement_timeout

revision = "linttest"
down_revision = "{head}"
branch_labels = None
depends_on = None
{accepts}

def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''

UNSAFE = {
    "adding-required-field": 'op.add_column("items", sa.Column("sku", sa.Text(), nullable=False))',
    "ban-drop-column": 'op.drop_column("items", "description")',
    "renaming-column": 'op.alter_column("items", "name", new_column_name="title")',
    "renaming-table": 'op.rename_table("items", "products")',
    "ban-drop-table": 'op.drop_table("cache_debts")',
    "require-concurrent-index-creation": 'op.create_index("ix_items_name", "items", ["name"])',
    "changing-column-type": 'op.alter_column("items", "name", type_=sa.Text())',
}

SAFE = {
    "nullable column": 'op.add_column("items", sa.Column("sku", sa.Text(), nullable=True))',
    "column with a default": (
        'op.add_column("items", sa.Column("stock", sa.BigInteger(), nullable=False,'
        ' server_default="0"))'
    ),
    "index built concurrently": (
        "with op.get_context().autocommit_block(), statement_timeout(seconds=3600):\n"
        '        op.create_index("ix_items_name", "items", ["name"],\n'
        "            postgresql_concurrently=True, if_not_exists=True)"
    ),
    "long statement on purpose": (
        "with statement_timeout(seconds=600):\n"
        "        op.execute(\"UPDATE items SET description = '' WHERE description IS NULL\")"
    ),
}


class Linted(NamedTuple):
    returncode: int
    stderr: str


@pytest.fixture
def lint(capsys: pytest.CaptureFixture[str]) -> Callable[[Path], Linted]:
    """The lint over a migrations folder, in this process (a process each is seconds slower)."""

    def run(folder: Path) -> Linted:
        try:
            status = migration_lint.lint(folder)
        except SystemExit as exc:
            status = 1
            print(exc.code, file=sys.stderr)
        return Linted(status, capsys.readouterr().err)

    return run


def with_migration(tmp_path: Path, body: str, accepts: str = "") -> Path:
    """A copy of api/migrations with one more revision on top of the head."""
    folder = tmp_path / "migrations"
    shutil.copytree(
        ROOT / "api" / "migrations", folder, ignore=shutil.ignore_patterns("__pycache__")
    )
    text = MIGRATION.format(head=head_revision(), accepts=accepts, body=f"    {body}")
    (folder / "versions" / "20990101_9999_lint_test.py").write_text(text)
    return folder


def test_the_kits_migrations_pass(lint):
    proc = lint(ROOT / "api" / "migrations")
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize(("rule", "body"), UNSAFE.items(), ids=list(UNSAFE))
def test_an_unsafe_form_is_caught(lint, tmp_path, rule, body):
    proc = lint(with_migration(tmp_path, body))
    assert proc.returncode != 0
    assert rule in proc.stderr, proc.stderr
    assert "20990101_9999_lint_test.py" in proc.stderr
    assert "lint_accepts" in proc.stderr, "says how to accept one on purpose"


def test_lint_accepts_lets_one_through_on_purpose(lint, tmp_path):
    accepts = (
        'lint_accepts = {"ban-drop-column": "unread since release 41 (expand, then contract)"}'
    )
    folder = with_migration(tmp_path, UNSAFE["ban-drop-column"], accepts)
    proc = lint(folder)
    assert proc.returncode == 0, proc.stderr
    # Only the rule it names: another unsafe form in the same file is still caught.
    both = f"{UNSAFE['ban-drop-column']}\n    {UNSAFE['renaming-column']}"
    proc = lint(with_migration(tmp_path / "both", both, accepts))
    assert proc.returncode != 0
    assert "renaming-column" in proc.stderr
    assert "ban-drop-column" not in proc.stderr


def test_an_accept_needs_a_reason(lint, tmp_path):
    folder = with_migration(
        tmp_path, UNSAFE["ban-drop-column"], 'lint_accepts = {"ban-drop-column": ""}'
    )
    proc = lint(folder)
    assert proc.returncode != 0
    assert "lint_accepts must map each rule to why" in proc.stderr


@pytest.mark.parametrize("body", SAFE.values(), ids=list(SAFE))
def test_a_safe_form_passes(lint, tmp_path, body):
    proc = lint(with_migration(tmp_path, body))
    assert proc.returncode == 0, proc.stderr


def test_the_rendered_sql_carries_the_migrate_steps_timeouts(tmp_path):
    """What squawk reads is what the migrate step runs: its timeouts first, and a long statement
    allowed on purpose only inside its block."""
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option(
        "script_location", str(with_migration(tmp_path, SAFE["long statement on purpose"]))
    )
    script = ScriptDirectory.from_config(config).get_revision("linttest")
    assert script is not None
    statements = [
        line.rstrip(";")
        for line in rendered_sql(config, script).splitlines()
        if line.startswith(("SET ", "UPDATE items"))
    ]
    assert statements == [
        "SET lock_timeout = '2000ms'",
        "SET statement_timeout = '5000ms'",
        "SET statement_timeout = '600000ms'",
        "UPDATE items SET description = '' WHERE description IS NULL",
        "SET statement_timeout = '5000ms'",
    ]
