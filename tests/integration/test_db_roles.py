"""The app's PostgreSQL role against the stack's real server: what `python -m api.migrate` grants
on a database an earlier version of the kit made (tables first, role after), what the role can
and cannot do, idempotence, and a password rotation."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from core.settings import get_settings


def _server() -> str:
    return get_settings().database_url_sync.replace("+psycopg", "").rsplit("/", 1)[0]


def _migrate(*args: str, **env: str) -> None:
    proc = subprocess.run(
        list(args), capture_output=True, text=True, env={**os.environ, **env}, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture
def old_database(stack) -> Iterator[tuple[str, str]]:
    """A database as the previous kit left it: migrated by `alembic upgrade head` alone, a row
    written by the owner, no app role. Yields (database, role); dropped afterwards."""
    suffix = uuid.uuid4().hex[:8]
    database, role = f"roles_{suffix}", f"roles_{suffix}_rw"
    admin = psycopg.connect(f"{_server()}/postgres", autocommit=True)
    admin.execute(f'CREATE DATABASE "{database}"')
    try:
        _migrate("alembic", "upgrade", "head", POSTGRES_DB=database)
        with psycopg.connect(f"{_server()}/{database}", autocommit=True) as owner:
            owner.execute("INSERT INTO items (name, price_cents) VALUES ('before', 0)")
        yield database, role
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        admin.close()


def _as_role(database: str, role: str, password: str) -> psycopg.Connection:
    host_part = _server().split("@", 1)[1]
    return psycopg.connect(
        f"postgresql://{role}:{password}@{host_part}/{database}", autocommit=True
    )


REFUSED = [
    ("CREATE TABLE stolen (x int)", "permission denied for schema public"),
    ("DROP TABLE items", "must be owner of table items"),
    ("ALTER TABLE items ADD COLUMN x int", "must be owner of table items"),
    ("TRUNCATE items", "permission denied for table items"),
    ("COPY (SELECT 1) TO PROGRAM 'true'", "pg_execute_server_program"),
    ("SELECT pg_read_file('/etc/passwd')", "permission denied for function pg_read_file"),
    ("UPDATE alembic_version SET version_num = 'x'", "permission denied for table alembic_version"),
    ("CREATE ROLE intruder", "permission denied to create role"),
]


def test_app_role_reads_and_writes_rows_and_nothing_else(old_database):
    database, role = old_database
    _migrate(
        "python", "-m", "api.migrate",
        POSTGRES_DB=database, POSTGRES_APP_USER=role, POSTGRES_APP_PASSWORD="first-password",
    )  # fmt: skip
    with _as_role(database, role, "first-password") as app:
        superuser = "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
        assert app.execute(superuser).fetchone() == (False,)
        # The row the previous version wrote, and every kind of write the app does.
        assert app.execute("SELECT name FROM items").fetchall() == [("before",)]
        (item_id,) = app.execute(
            "INSERT INTO items (name, price_cents) VALUES ('after', 1) RETURNING id"
        ).fetchone()
        app.execute("UPDATE items SET name = 'renamed' WHERE id = %s", (item_id,))
        app.execute("DELETE FROM items WHERE id = %s", (item_id,))
        assert app.execute("SELECT version_num FROM alembic_version").fetchone()
        for statement, refusal in REFUSED:
            with pytest.raises(psycopg.Error) as error:
                app.execute(statement)
            assert refusal in str(error.value), (statement, str(error.value))


def test_migrate_is_idempotent_and_rotates_the_password(old_database):
    database, role = old_database
    for password in ("first-password", "first-password", "rotated-password"):
        _migrate(
            "python", "-m", "api.migrate",
            POSTGRES_DB=database, POSTGRES_APP_USER=role, POSTGRES_APP_PASSWORD=password,
        )  # fmt: skip
    with _as_role(database, role, "rotated-password") as app:
        assert app.execute("SELECT count(*) FROM items").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        _as_role(database, role, "first-password")


def test_migrate_refuses_to_make_the_owner_the_app_role(stack):
    proc = subprocess.run(
        ["python", "-m", "api.migrate"],
        capture_output=True,
        text=True,
        env={**os.environ, "POSTGRES_APP_USER": get_settings().postgres_user},
        timeout=120,
    )
    assert proc.returncode != 0
    assert "POSTGRES_APP_USER" in proc.stderr and "must differ from POSTGRES_USER" in proc.stderr


def test_migrate_refuses_an_interrupted_rotations_two_passwords_and_changes_nothing(old_database):
    database, role = old_database
    _migrate(
        "python", "-m", "api.migrate",
        POSTGRES_DB=database, POSTGRES_APP_USER=role, POSTGRES_APP_PASSWORD="first-password",
    )  # fmt: skip
    proc = subprocess.run(
        ["python", "-m", "api.migrate"],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "POSTGRES_DB": database,
            "POSTGRES_APP_USER": role,
            "POSTGRES_APP_PASSWORD": "first-password\nsecond-password",
        },
        timeout=120,
    )
    assert proc.returncode != 0
    assert "POSTGRES_APP_PASSWORD has several lines" in proc.stderr
    assert "make rotate-secret NAME=postgres_app_password" in proc.stderr
    with _as_role(database, role, "first-password") as app:
        assert app.execute("SELECT count(*) FROM items").fetchone() == (1,)
