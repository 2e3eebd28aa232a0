"""Request-scoped dependencies, taken from what the lifespan put on app.state.

Every route takes its dependencies through these aliases, defined here once:
SessionDep (a write transaction), ReadSessionDep (autocommit reads), SessionsDep (the pool, for one
Core statement in autocommit: the hot paths), CacheDep, SettingsDep, JobQueueDep. One exception:
GET /items/{id} calls sessions_of and item_cache_of itself (api/routes/items.py says why).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.cache import ItemCache
from api.db import Sessions
from api.job_queue import JobQueue
from core.settings import Settings


# Plain functions: the dependencies below use them, and so does GET /items/{id}.
def sessions_of(request: Request) -> Sessions:
    return cast(Sessions, request.app.state.sessions)


def item_cache_of(request: Request) -> ItemCache:
    return cast(ItemCache, request.app.state.cache)


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with sessions_of(request)() as db_session:
        yield db_session


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with sessions_of(request)(read_only=True) as db_session:
        yield db_session


# The pool itself, for a Core statement opened inside the handler (`sessions.statement()`): a
# dependency that opened the connection would take it before the body is validated, and a
# malformed request would then wait for, or fail on, the database instead of getting its 422.
async def sessions(request: Request) -> Sessions:
    return sessions_of(request)


# `async def` throughout: FastAPI runs a plain `def` dependency in the thread pool, a thread hop on
# every request.
async def cache(request: Request) -> ItemCache:
    return item_cache_of(request)


async def settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


async def job_queue(request: Request) -> JobQueue:
    return cast(JobQueue, request.app.state.job_queue)


SessionDep = Annotated[AsyncSession, Depends(session)]
ReadSessionDep = Annotated[AsyncSession, Depends(read_session)]
SessionsDep = Annotated[Sessions, Depends(sessions)]
CacheDep = Annotated[ItemCache, Depends(cache)]
SettingsDep = Annotated[Settings, Depends(settings)]
JobQueueDep = Annotated[JobQueue, Depends(job_queue)]
