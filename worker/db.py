"""The task code's sessions: one engine per pool process (core/sync_engine.py), made after the
fork."""

from __future__ import annotations

from sqlalchemy.orm import Session, sessionmaker

from core.settings import get_settings
from core.sync_engine import make_sync_engine
from worker.tracing import traced

_sessions: sessionmaker[Session] | None = None


def sessions() -> sessionmaker[Session]:
    global _sessions
    if _sessions is None:
        engine = traced(make_sync_engine(get_settings(), "worker", pooled=True))
        _sessions = sessionmaker(engine, expire_on_commit=False)
    return _sessions


def reset_after_fork() -> None:
    """A connection inherited from the parent must never be used by a child."""
    global _sessions
    _sessions = None
