"""The database layer on the stack's real PostgreSQL: liveness check, read sessions, fair queue."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import event, text

from api.engine import PING_AFTER_IDLE_SECONDS, make_async_engine
from api.pool_queue import make_pool_queue
from core.settings import get_settings


@pytest.fixture
async def engine(stack):
    engine = make_async_engine(get_settings())
    yield engine
    await engine.dispose()


def _settings(**overrides):
    return get_settings().model_copy(update=overrides)


async def test_read_sessions_autocommit_and_write_sessions_transact(engine):
    sessions = make_pool_queue(engine, get_settings())
    async with sessions(read_only=True) as db:
        # Outside a transaction block, PostgreSQL's transaction id changes with every statement.
        first = await db.scalar(text("SELECT txid_current()"))
        second = await db.scalar(text("SELECT txid_current()"))
        assert second != first
    async with sessions() as db:
        first = await db.scalar(text("SELECT txid_current()"))
        second = await db.scalar(text("SELECT txid_current()"))
        assert second == first
        await db.rollback()


async def test_a_connection_the_server_killed_is_replaced_before_use(engine):
    sessions = make_pool_queue(engine, _settings(db_pool_size=1, db_max_overflow=0))
    async with sessions(read_only=True) as db:
        victim = await db.scalar(text("SELECT pg_backend_pid()"))
    killer = make_async_engine(get_settings())
    try:
        async with killer.connect() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": victim})
    finally:
        await killer.dispose()
    # Idle long enough to be checked: a connection back in the pool for less is trusted.
    await asyncio.sleep(PING_AFTER_IDLE_SECONDS + 0.05)
    async with sessions(read_only=True) as db:
        assert await db.scalar(text("SELECT pg_backend_pid()")) != victim


async def test_no_place_within_the_pool_timeout_is_a_timeout(engine):
    sessions = make_pool_queue(
        engine, _settings(db_pool_size=1, db_max_overflow=0, db_pool_timeout=0.2)
    )
    async with sessions(read_only=True):
        with pytest.raises(TimeoutError):
            async with sessions(read_only=True):
                pass


async def test_load_beyond_the_pool_opens_no_extra_connections(app, client):
    opened = 0

    def count(*_):
        nonlocal opened
        opened += 1

    engine = app.state.engine.sync_engine
    event.listen(engine, "connect", count)
    try:
        statuses = await asyncio.gather(*(client.get("/items?limit=5") for _ in range(60)))
    finally:
        event.remove(engine, "connect", count)
    assert {s.status_code for s in statuses} == {200}
    assert opened <= get_settings().db_pool_size
