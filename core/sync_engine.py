"""Synchronous database access, for the worker, its reaper, the job exporter and the migrations:
one engine factory, so each user states only how its engine differs (pool, timeouts). psycopg
without SQLAlchemy connects to Settings.libpq_url.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

from core.db_passwords import try_each_password
from core.settings import Settings


def make_sync_engine(
    settings: Settings,
    name: str | None = None,
    *,
    pooled: bool = False,
    connect_timeout: int | None = None,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
) -> Engine:
    """name: the connection's application_name, after the app's (None: libpq's default).
    pooled: a pool of one, and one more on overflow, pinged on checkout; else a connection per
    use (NullPool), for a process that forks or a query that is rare."""
    connect_args: dict[str, Any] = {}
    if name is not None:
        connect_args["application_name"] = f"{settings.app_name}-{name}"
    if connect_timeout is not None:
        connect_args["connect_timeout"] = connect_timeout
    options = [
        f"-c {parameter}={milliseconds}"
        for parameter, milliseconds in (
            ("statement_timeout", statement_timeout_ms),
            ("lock_timeout", lock_timeout_ms),
        )
        if milliseconds is not None
    ]
    if options:
        connect_args["options"] = " ".join(options)
    pool: dict[str, Any] = (
        {"pool_size": 1, "max_overflow": 1, "pool_pre_ping": True}
        if pooled
        else {"poolclass": NullPool}
    )
    engine = create_engine(settings.database_url_sync, **pool, connect_args=connect_args)
    try_each_password(engine, settings.postgres_passwords)
    return engine
