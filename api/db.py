"""The async engine: one per process, made in the app's lifespan (so gunicorn --preload is safe:
no connection is opened in the master and shared by forked workers).

Round trips are the cost of a request here, so the engine spends as few as it can:
- The liveness check on checkout is one `SELECT 1` (SQLAlchemy's pool_pre_ping wraps its ping in
  BEGIN and ROLLBACK for pgbouncer's transaction mode, which this kit does not use: three round
  trips), and only for a connection that sat idle (PING_AFTER_IDLE_SECONDS).
- Reads run in autocommit: one statement, one round trip, no BEGIN and ROLLBACK around it.
- Requests beyond the pool wait in line, in order (see Sessions).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import cache
from typing import Any

import anyio
import asyncpg
from sqlalchemy import String, column, event, select, table, text
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from core.settings import Settings

# A connection back in the pool for less than this is handed out again without a ping. Under
# load that is nearly every checkout, and the ping was a round trip on every request; a database
# restart takes longer than this, and the first error it causes on a connection makes SQLAlchemy
# replace every connection the pool holds. An idle connection (a quiet API, a restart while idle,
# a connection a firewall dropped) is always checked.
PING_AFTER_IDLE_SECONDS = 0.25


def _note_checkin(dbapi_connection: Any, connection_record: Any) -> None:
    if connection_record is not None:
        connection_record.info["checked_in"] = time.monotonic()


def _ping_on_checkout(dbapi_connection: Any, connection_record: Any, proxy: Any) -> None:
    """Pessimistic disconnect handling: a connection a database restart broke is replaced before
    it is handed out (the pool retries the checkout on DisconnectionError), so a restart costs
    errors only while the database is down. Errors that are not about the connection propagate."""
    checked_in = connection_record.info.get("checked_in")
    if checked_in is not None and time.monotonic() - checked_in < PING_AFTER_IDLE_SECONDS:
        return
    try:
        dbapi_connection.run_async(lambda driver: driver.execute("SELECT 1"))
    except (OSError, asyncpg.InterfaceError, asyncpg.PostgresError) as exc:
        raise DisconnectionError(f"connection failed its liveness check: {exc!r}") from exc


def create_engine(settings: Settings) -> AsyncEngine:
    pool: dict[str, Any] = (
        {"poolclass": NullPool}
        if settings.db_pool_mode == "per-request"
        else {
            "pool_size": settings.db_pool_size,
            "max_overflow": settings.db_max_overflow,
            "pool_timeout": settings.db_pool_timeout,
            "pool_recycle": 1800,
        }
    )
    engine = create_async_engine(
        settings.database_url,
        **pool,
        connect_args={
            "timeout": 5,
            "server_settings": {
                "application_name": f"{settings.app_name}-api",
                "statement_timeout": str(settings.db_statement_timeout_ms),
            },
        },
    )
    if settings.db_pool_mode == "pooled":  # a per-request connection is new: nothing to check
        event.listen(engine.sync_engine, "checkout", _ping_on_checkout)
        event.listen(engine.sync_engine, "checkin", _note_checkin)
    return engine


class Sessions:
    """Sessions in arrival order. SQLAlchemy's async pool lets a task that asks just as a
    connection comes back take it ahead of the tasks already waiting (sqlalchemy#7679): under load
    beyond the pool, a few requests then wait for seconds. A FIFO semaphore sized to the pool,
    which hands each freed place to the longest waiter, keeps the pool itself free of waiters."""

    def __init__(
        self,
        makers: dict[bool, async_sessionmaker[AsyncSession]],
        autocommit: AsyncEngine,
        places: int,
        timeout: float,
    ) -> None:
        self._makers = makers
        self._autocommit = autocommit
        self._places = anyio.Semaphore(places, fast_acquire=True)
        self._timeout = timeout

    @asynccontextmanager
    async def _place(self) -> AsyncIterator[None]:
        # TimeoutError: answered 503 by the app, like the pool's own timeout.
        with anyio.fail_after(self._timeout):
            await self._places.acquire()
        try:
            yield
        finally:
            self._places.release()

    @asynccontextmanager
    async def __call__(self, *, read_only: bool = False) -> AsyncIterator[AsyncSession]:
        async with self._place(), self._makers[read_only]() as session:
            yield session

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """A connection in autocommit for one SQLAlchemy Core statement, atomic on its own (a
        read, or an INSERT ... RETURNING): one round trip, and no ORM unit of work or identity
        map, which cost several times the round trip on the hot paths (make bench)."""
        async with self._place(), self._autocommit.connect() as conn:
            yield conn


def create_sessions(engine: AsyncEngine, settings: Settings) -> Sessions:
    """Write sessions: a transaction, committed explicitly. Read-only sessions: autocommit, so a
    single-statement read costs one round trip, with no BEGIN and ROLLBACK around it (a read of
    several statements that must agree with each other belongs in a write session)."""
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    makers = {
        False: async_sessionmaker(engine, expire_on_commit=False),
        True: async_sessionmaker(autocommit, expire_on_commit=False),
    }
    places = settings.db_pool_size + settings.db_max_overflow
    return Sessions(makers, autocommit, places, settings.db_pool_timeout)


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        exists = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL"))
        if not exists:
            return None
        # A typed select, not text(): the result is known to be a str.
        return await conn.scalar(
            select(column("version_num", String)).select_from(table("alembic_version"))
        )


# WAL archiving as PostgreSQL's archiver sees it (pg_stat_archiver, readable by any role): failing
# when its last attempt failed, and for how long nothing was archived (since the server started,
# if nothing ever was).
ARCHIVE_STATE = text(
    "SELECT current_setting('archive_mode') <> 'off',"
    " coalesce(last_failed_time > coalesce(last_archived_time, '-infinity'), false),"
    " extract(epoch FROM now() - coalesce(last_archived_time, pg_postmaster_start_time()))::float8,"
    " last_failed_wal"
    " FROM pg_stat_archiver"
)


async def archive_problem(engine: AsyncEngine, stall_seconds: int) -> str | None:
    """Why WAL archiving is failing, if it has been failing for more than stall_seconds."""
    async with engine.connect() as conn:
        archiving, failing, since_success, failed_wal = (await conn.execute(ARCHIVE_STATE)).one()
    if archiving and failing and since_success > stall_seconds:
        return f"WAL archiving failing: nothing archived for {since_success:.0f}s ({failed_wal})"
    return None


# Every migrator of this database takes this PostgreSQL advisory lock (api/migrations/env.py), so
# two started at once run one after the other. Any constant shared by all of them.
MIGRATION_LOCK_ID = 727_274_001


@cache
def head_revision() -> str | None:
    """The newest migration this code ships; /ready compares the database against it. Read on
    the first /ready, not at start-up: Alembic's imports are about 0.4 s of a cold start."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "api:migrations")
    return ScriptDirectory.from_config(config).get_current_head()
