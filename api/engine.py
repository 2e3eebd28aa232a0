"""The async engine: one per process, made in the app's lifespan (so gunicorn --preload is safe:
no connection is opened in the master and shared by forked workers).

Round trips are the cost of a request here, so the engine spends as few as it can:
- The ping on checkout is one `SELECT 1` (SQLAlchemy's pool_pre_ping wraps its ping in
  BEGIN and ROLLBACK for pgbouncer's transaction mode, which this kit does not use: three round
  trips), and only for a connection that sat idle (PING_AFTER_IDLE_SECONDS).
- Reads run in autocommit: one statement, one round trip, no BEGIN and ROLLBACK around it.
- Requests beyond the pool wait in line, in order (api/pool_queue.py).
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from core.db_passwords import try_each_password
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


def make_async_engine(settings: Settings) -> AsyncEngine:
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
    try_each_password(engine.sync_engine, settings.postgres_passwords)
    return engine
