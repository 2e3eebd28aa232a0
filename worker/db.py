"""A synchronous engine for the worker: one per pool process, made after the fork."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings

_sessions: sessionmaker[Session] | None = None


def sessions() -> sessionmaker[Session]:
    global _sessions
    if _sessions is None:
        settings = get_settings()
        engine: Engine = create_engine(
            settings.database_url_sync,
            pool_size=1,
            max_overflow=1,
            pool_pre_ping=True,
            connect_args={"application_name": f"{settings.app_name}-worker"},
        )
        _sessions = sessionmaker(engine, expire_on_commit=False)
    return _sessions


def reset_after_fork() -> None:
    """A connection inherited from the parent must never be used by a child."""
    global _sessions
    _sessions = None
