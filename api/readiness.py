"""What /ready checks (api/routes/ops.py answers): the database reachable and migrated to this
code's head, Redis reachable, WAL archiving not failing for longer than ARCHIVE_STALL_SECONDS.

Each check returns None when it passes, else why it failed; none takes longer than
CHECK_TIMEOUT_SECONDS, and all run at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from functools import cache

from redis.asyncio import Redis
from sqlalchemy import String, column, select, table, text
from sqlalchemy.ext.asyncio import AsyncEngine

from core.settings import Settings

CHECK_TIMEOUT_SECONDS = 2.0


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


@cache
def head_revision() -> str | None:
    """The newest migration this code ships; /ready compares the database against it. Read on
    the first /ready, not at start-up: Alembic's imports are about 0.4 s of a cold start."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", "api:migrations")
    return ScriptDirectory.from_config(config).get_current_head()


async def _check(coro: Awaitable[str | None]) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_SECONDS):
            return await coro
    except Exception as exc:
        return f"unreachable: {type(exc).__name__}: {exc}"[:300]


async def _database(engine: AsyncEngine) -> str | None:
    head = head_revision()
    revision = await current_revision(engine)
    if revision != head:
        return f"migrations not at head (database at {revision}, code at {head})"
    return None


async def _redis(redis: Redis) -> None:
    await redis.ping()


async def _archive(engine: AsyncEngine, stall_seconds: int) -> str | None:
    """A database whose WAL does not reach the backups loses, with its disk, everything since.
    Read from PostgreSQL (pg_stat_archiver), so the api knows nothing of pgBackRest."""
    if not stall_seconds:
        return None
    try:
        return await archive_problem(engine, stall_seconds)
    except Exception:
        # An unreachable database is the database check's failure; not counted twice.
        return None


async def problems(engine: AsyncEngine, redis: Redis, settings: Settings) -> dict[str, str | None]:
    """Every check by name: None when it passed, else why it failed."""
    database, redis_problem, archive = await asyncio.gather(
        _check(_database(engine)),
        _check(_redis(redis)),
        _check(_archive(engine, settings.archive_stall_seconds)),
    )
    return {"database": database, "redis": redis_problem, "archive": archive}
