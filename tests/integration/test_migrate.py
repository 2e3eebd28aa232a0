"""The migrate step against the stack's real PostgreSQL, with a migration that alters `items`
while another transaction holds a lock on it: the step gives up within its budget naming the
lock timeout, the table and the holder, after the retries it logs; queries on `items` wait at
most the lock timeout meanwhile; with the lock gone it succeeds. And the statement timeout:
a slow statement fails the step, unless its migration allows it on purpose."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from api.readiness import head_revision
from core.settings import get_settings
from tests.support.migrations import migration_source

ROOT = Path(__file__).resolve().parents[2]
LOCK_TIMEOUT_MS = 500
RETRIES = 2
# Every attempt's wait, the pauses between them (1 s, 2 s) and a process start, with room.
BUDGET_SECONDS = (RETRIES + 1) * LOCK_TIMEOUT_MS / 1000 + 1 + 2 + 10

ALTER_ITEMS = '    op.execute("ALTER TABLE items ADD COLUMN migrate_test TEXT")'


def _server() -> str:
    return get_settings().database_url_sync.replace("+psycopg", "").rsplit("/", 1)[0]


class Scratch:
    """A database at the kit's head, and a project directory whose alembic.ini runs the kit's
    migrations plus one more (its upgrade: `body`)."""

    def __init__(self, root: Path, database: str) -> None:
        self.root, self.database, self.role = root, database, f"{database}_rw"

    def with_migration(self, body: str) -> None:
        migrations = self.root / "migrations"
        shutil.rmtree(migrations, ignore_errors=True)
        shutil.copytree(
            ROOT / "api" / "migrations", migrations, ignore=shutil.ignore_patterns("__pycache__")
        )
        text = migration_source(
            "migrate test",
            "migratetest",
            head_revision(),
            body,
            imports=(
                "from alembic import op",
                "",
                "from api.migration_timeouts import statement_timeout",
            ),
        )
        (migrations / "versions" / "20990101_9998_migrate_test.py").write_text(text)
        ini = (ROOT / "alembic.ini").read_text()
        ini = ini.replace("script_location = api:migrations", f"script_location = {migrations}")
        (self.root / "alembic.ini").write_text(ini)

    def migrate(self, **env: str) -> tuple[subprocess.CompletedProcess[str], float]:
        """python -m api.migrate, as the migrate service runs it; and how long it took."""
        started = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "api.migrate"],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "POSTGRES_DB": self.database,
                "POSTGRES_APP_USER": self.role,
                "POSTGRES_APP_PASSWORD": "migrate-test",
                **env,
            },
        )
        return proc, time.monotonic() - started

    def connect(self, name: str) -> psycopg.Connection:
        return psycopg.connect(
            f"{_server()}/{self.database}", autocommit=True, application_name=name
        )

    def revision(self) -> str:
        with self.connect("migrate-test-check") as c:
            row = c.execute("SELECT version_num FROM alembic_version").fetchone()
        assert row
        return str(row[0])


@pytest.fixture
def scratch(stack, tmp_path) -> Iterator[Scratch]:
    database = f"migrate_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(f"{_server()}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{database}"')
    try:
        the_scratch = Scratch(tmp_path, database)
        proc = subprocess.run(
            [sys.executable, "-m", "api.migrate"],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "POSTGRES_DB": database, "POSTGRES_APP_USER": the_scratch.role},
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        yield the_scratch
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{database}_rw"')
        admin.close()


class Reads:
    """SELECTs on items, one after another, recording how long each took."""

    def __init__(self, scratch: Scratch) -> None:
        self.took: list[float] = []
        self._connection = scratch.connect("migrate-test-reader")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._connection.execute("SELECT count(*) FROM items").fetchone()
            self.took.append(time.monotonic() - started)
            time.sleep(0.05)

    def __enter__(self) -> Reads:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self._connection.close()


def test_a_held_lock_fails_the_step_within_its_budget_and_never_blocks_reads(scratch):
    scratch.with_migration(ALTER_ITEMS)
    # ACCESS SHARE, as any open transaction that read items holds: it conflicts only with the
    # ALTER's ACCESS EXCLUSIVE, so the app's reads and writes go on beside it.
    holder = scratch.connect("migrate-test-holder")
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE items IN ACCESS SHARE MODE")
    holder_pid = holder.info.backend_pid
    try:
        with Reads(scratch) as reads:
            proc, took = scratch.migrate(
                MIGRATION_LOCK_TIMEOUT_MS=str(LOCK_TIMEOUT_MS), MIGRATION_LOCK_RETRIES=str(RETRIES)
            )
    finally:
        holder.close()
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "migration failed: lock timeout on table items" in proc.stderr, proc.stderr
    assert f"after {RETRIES + 1} attempt(s) of {LOCK_TIMEOUT_MS} ms" in proc.stderr
    assert f"pid {holder_pid} (migrate-test-holder" in proc.stderr, "names who holds it"
    assert took < BUDGET_SECONDS, took
    for retry in range(1, RETRIES + 1):
        assert f"lock timeout on table items: retry {retry}/{RETRIES}" in proc.stdout
    assert f"retry {RETRIES + 1}/" not in proc.stdout
    assert scratch.revision() == head_revision(), "rolled back: the schema the old release had"
    # A read queued behind the waiting ALTER waited at most the lock timeout, never for good.
    assert len(reads.took) > 10
    assert max(reads.took) < LOCK_TIMEOUT_MS / 1000 + 1, max(reads.took)

    # The transaction gone, the same step succeeds.
    proc, _ = scratch.migrate(MIGRATION_LOCK_TIMEOUT_MS=str(LOCK_TIMEOUT_MS))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert scratch.revision() == "migratetest"
    assert "retry" not in proc.stdout


def test_a_slow_statement_fails_the_step_unless_allowed_on_purpose(scratch):
    scratch.with_migration('    op.execute("SELECT pg_sleep(1.5)")')
    proc, _ = scratch.migrate(MIGRATION_STATEMENT_TIMEOUT_MS="500")
    assert proc.returncode != 0
    assert "migration failed: statement timeout (MIGRATION_STATEMENT_TIMEOUT_MS=500)" in proc.stderr
    assert "api.migration_timeouts.statement_timeout" in proc.stderr
    assert "retry" not in proc.stdout, "a statement timeout is not retried"
    assert scratch.revision() == head_revision()

    scratch.with_migration(
        "    with statement_timeout(seconds=5):\n"
        '        op.execute("SELECT pg_sleep(1.5)")\n'
        "    # After the block, the setting again.\n"
        "    op.execute(\"DO $$ BEGIN ASSERT current_setting('statement_timeout') = '500ms';"
        ' END $$")'
    )
    proc, _ = scratch.migrate(MIGRATION_STATEMENT_TIMEOUT_MS="500")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert scratch.revision() == "migratetest"
