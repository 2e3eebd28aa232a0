"""The queue in front of the connection pool (api.pool_queue.PoolQueue): its discipline, without a
database.

The sessions it hands out are stand-ins here on purpose: what is under test is who gets a place
and when. The same class on a real pool is covered by tests/integration/test_db.py.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager

import pytest

from api.pool_queue import PoolQueue


@asynccontextmanager
async def _session():
    yield "session"


class _Engine:
    """Stands in for the autocommit engine: its connect() is the same kind of context."""

    connect = staticmethod(_session)


def _sessions(places: int, timeout: float = 5) -> PoolQueue:
    return PoolQueue({False: _session, True: _session}, _Engine(), places, timeout)


async def test_a_freed_place_goes_to_the_longest_waiter_not_to_whoever_asks_next():
    sessions = _sessions(places=1)
    served: list[str] = []

    async def greedy() -> None:
        # Asks again the moment it gives its place back, as a busy worker's next request does.
        for _ in range(5):
            async with sessions():
                served.append("greedy")
                await asyncio.sleep(0.01)

    async def patient() -> None:
        async with sessions(read_only=True):
            served.append("patient")

    async with asyncio.TaskGroup() as group:
        group.create_task(greedy())
        await asyncio.sleep(0.001)  # greedy holds the only place
        group.create_task(patient())
    assert served == ["greedy", "patient", "greedy", "greedy", "greedy", "greedy"]


async def test_waiters_are_served_in_arrival_order():
    sessions = _sessions(places=2)
    served: list[int] = []

    async def use(n: int) -> None:
        async with sessions():
            served.append(n)
            await asyncio.sleep(0.005)

    async with asyncio.TaskGroup() as group:
        for n in range(12):
            group.create_task(use(n))
            await asyncio.sleep(0)
    assert served == list(range(12))


async def test_no_place_within_the_timeout_raises_timeout_error():
    sessions = _sessions(places=1, timeout=0.05)
    async with sessions():
        with pytest.raises(TimeoutError):
            async with sessions():
                pass
    async with sessions():  # the place came back
        pass


async def test_a_failing_session_gives_its_place_back():
    sessions = _sessions(places=1, timeout=0.05)
    with pytest.raises(RuntimeError):
        async with sessions():
            raise RuntimeError("boom")
    async with sessions():
        pass


async def test_statements_and_sessions_share_the_places():
    """A Core statement's connection comes from the same pool: it waits in the same line."""
    sessions = _sessions(places=1, timeout=0.05)
    async with sessions():
        with pytest.raises(TimeoutError):
            async with sessions.statement():
                pass
    async with sessions.statement() as conn:
        assert conn == "session"
        with pytest.raises(TimeoutError):
            async with sessions(read_only=True):
                pass
    async with sessions():  # both places came back
        pass
