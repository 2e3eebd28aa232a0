"""The queue in front of the connection pool: every session and every connection the api takes
from its engine (api/engine.py) waits here for its turn, first come, first served."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from core.settings import Settings


class PoolQueue:
    """Sessions (called) and connections (statement()) in arrival order. SQLAlchemy's async pool
    lets a task that asks just as a connection comes back take it ahead of the tasks already
    waiting (sqlalchemy#7679): under load beyond the pool, a few requests then wait for seconds.
    A FIFO semaphore sized to the pool, which hands each freed place to the longest waiter, keeps
    the pool itself free of waiters."""

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
        map, which cost more than the round trip on the hot paths (docs/performance.md)."""
        async with self._place(), self._autocommit.connect() as conn:
            yield conn


def make_pool_queue(engine: AsyncEngine, settings: Settings) -> PoolQueue:
    """Write sessions: a transaction, committed explicitly. Read-only sessions: autocommit, so a
    single-statement read costs one round trip, with no BEGIN and ROLLBACK around it (a read of
    several statements that must agree with each other belongs in a write session)."""
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    makers = {
        False: async_sessionmaker(engine, expire_on_commit=False),
        True: async_sessionmaker(autocommit, expire_on_commit=False),
    }
    places = settings.db_pool_size + settings.db_max_overflow
    return PoolQueue(makers, autocommit, places, settings.db_pool_timeout)
