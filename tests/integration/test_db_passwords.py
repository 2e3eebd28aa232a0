"""Several passwords for one role (core/db_passwords.py), against the stack's real PostgreSQL: the
api's async engine and the worker's sync engine connect while the role's password changes under
them (ALTER ROLE, as make rotate-secret does), each paying one refused attempt and then trying the
password that worked first. A list of wrong passwords fails as one did; other errors are not
retried. The refused attempts are counted by the warning each one logs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from api.engine import make_async_engine
from core.settings import Settings, get_settings
from core.sync_engine import make_sync_engine


def _owner() -> psycopg.Connection:
    settings = get_settings()
    return psycopg.connect(settings.libpq_url, autocommit=True)


@pytest.fixture
def role(stack) -> Iterator[str]:
    """A throwaway login role whose password is "A"; dropped afterwards."""
    name = f"passwords_{uuid.uuid4().hex[:8]}"
    database = sql.Identifier(get_settings().postgres_db)
    with _owner() as owner:
        owner.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'A'").format(sql.Identifier(name)))
        owner.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, sql.Identifier(name))
        )
    try:
        yield name
    finally:
        with _owner() as owner:
            owner.execute(
                sql.SQL("REVOKE CONNECT ON DATABASE {} FROM {}").format(
                    database, sql.Identifier(name)
                )
            )
            owner.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def _set_password(role: str, password: str) -> None:
    with _owner() as owner:
        owner.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )


def _settings(role: str, passwords: str, **overrides: object) -> Settings:
    """As the api and the worker read them: the role, its passwords one a line; no pool, so each
    use opens (and authenticates) a new connection."""
    update = {
        "postgres_user": role,
        "postgres_password": SecretStr(passwords),
        "db_pool_mode": "per-request",
        **overrides,
    }
    return get_settings().model_copy(update=update)


def _sync_user(settings: Settings) -> Callable[[], str]:
    engine = make_sync_engine(settings, "passwords-test")

    def current_user() -> str:
        with engine.connect() as connection:
            return str(connection.scalar(text("SELECT current_user")))

    return current_user


def _refusals(caplog: pytest.LogCaptureFixture) -> int:
    """Refused attempts logged since the last call."""
    count = sum(record.name == "core.db_passwords" for record in caplog.records)
    caplog.clear()
    return count


def test_the_sync_engine_connects_through_a_change_of_password(role, caplog):
    current_user = _sync_user(_settings(role, "B\nA"))
    assert current_user() == role
    assert _refusals(caplog) == 1  # B, then A
    assert current_user() == role
    assert _refusals(caplog) == 0  # A first
    _set_password(role, "B")
    assert current_user() == role
    assert _refusals(caplog) == 1  # A, then B
    assert current_user() == role
    assert _refusals(caplog) == 0  # B first


async def test_the_async_engine_connects_through_a_change_of_password(role, caplog):
    engine = make_async_engine(_settings(role, "B\nA"))

    async def current_user() -> str:
        async with engine.connect() as connection:
            return str(await connection.scalar(text("SELECT current_user")))

    try:
        assert await current_user() == role
        assert _refusals(caplog) == 1
        assert await current_user() == role
        assert _refusals(caplog) == 0
        _set_password(role, "B")
        assert await current_user() == role
        assert _refusals(caplog) == 1
        assert await current_user() == role
        assert _refusals(caplog) == 0
    finally:
        await engine.dispose()


def test_when_every_password_is_wrong_the_last_refusal_is_raised(role, caplog):
    current_user = _sync_user(_settings(role, "X\nY"))
    with pytest.raises(DBAPIError, match="password authentication failed"):
        current_user()
    assert _refusals(caplog) == 1  # X refused and retried; Y's refusal raised


async def test_the_async_engine_raises_the_last_refusal_too(role, caplog):
    engine = make_async_engine(_settings(role, "X\nY"))
    try:
        with pytest.raises(DBAPIError, match="password authentication failed"):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    assert _refusals(caplog) == 1


def test_an_error_other_than_a_refused_password_is_not_retried(role, caplog):
    # A is right: a retry with B would end in B's refusal, not in the missing database.
    current_user = _sync_user(_settings(role, "A\nB", postgres_db="no_such_database"))
    with pytest.raises(DBAPIError, match='database "no_such_database" does not exist'):
        current_user()
    assert _refusals(caplog) == 0


async def test_the_async_engine_does_not_retry_other_errors_either(role, caplog):
    engine = make_async_engine(_settings(role, "A\nB", postgres_db="no_such_database"))
    try:
        with pytest.raises(DBAPIError, match='database "no_such_database" does not exist'):
            async with engine.connect():
                pass
    finally:
        await engine.dispose()
    assert _refusals(caplog) == 0
