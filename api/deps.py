"""What the lifespan put on app.state, typed: the accessors, and the dependencies built on them.

Code that reads app.state goes through the accessors (`*_of(request)`); routes take their
dependencies through these aliases, defined here once: SessionDep (a write transaction),
ReadSessionDep (autocommit reads), PoolQueueDep (for one Core statement in autocommit: the hot
paths), CacheDep, SettingsDep, JobQueueDep. One exception: GET /items/{id} calls pool_queue_of
and item_cache_of itself (api/routes/items.py says why).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from api.cache import ItemCache
from api.job_queue import JobQueue
from api.pool_queue import PoolQueue
from core.settings import Settings


# Plain functions, for code outside dependency solving (GET /items/{id}, /ready, auth) as well.
def settings_of(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def engine_of(request: Request) -> AsyncEngine:
    return cast(AsyncEngine, request.app.state.engine)


def redis_of(request: Request) -> Redis:
    return cast(Redis, request.app.state.redis)


def pool_queue_of(request: Request) -> PoolQueue:
    return cast(PoolQueue, request.app.state.pool_queue)


def item_cache_of(request: Request) -> ItemCache:
    return cast(ItemCache, request.app.state.cache)


def job_queue_of(request: Request) -> JobQueue:
    return cast(JobQueue, request.app.state.job_queue)


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with pool_queue_of(request)() as db_session:
        yield db_session


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with pool_queue_of(request)(read_only=True) as db_session:
        yield db_session


# The queue itself, for a Core statement opened inside the handler (`pool_queue.statement()`): a
# dependency that opened the connection would take it before the body is validated, and a
# malformed request would then wait for, or fail on, the database instead of getting its 422.
async def pool_queue(request: Request) -> PoolQueue:
    return pool_queue_of(request)


# `async def` throughout: FastAPI runs a plain `def` dependency in the thread pool, a thread hop on
# every request.
async def cache(request: Request) -> ItemCache:
    return item_cache_of(request)


async def settings(request: Request) -> Settings:
    return settings_of(request)


async def job_queue(request: Request) -> JobQueue:
    return job_queue_of(request)


SessionDep = Annotated[AsyncSession, Depends(session)]
ReadSessionDep = Annotated[AsyncSession, Depends(read_session)]
PoolQueueDep = Annotated[PoolQueue, Depends(pool_queue)]
CacheDep = Annotated[ItemCache, Depends(cache)]
SettingsDep = Annotated[Settings, Depends(settings)]
JobQueueDep = Annotated[JobQueue, Depends(job_queue)]
