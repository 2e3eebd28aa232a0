"""Waiting for a job to finish: the one polling loop (poll_job), and its form for the in-process
app's client (wait_for_job), which the integration tests and a user's own job tests call."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from tests.support.stack import wait_until
from worker.compute import iterated_sha256

JOB_FINISHED = ("succeeded", "failed")


def cost_for(seconds: float, most: int = 20_000_000) -> int:
    """A job cost (rounds) taking about `seconds` here, on the machine that also runs the worker."""
    rounds = 300_000
    started = time.perf_counter()
    iterated_sha256("calibrate", rounds)
    per_second = rounds / (time.perf_counter() - started)
    return max(1_000_000, min(most, int(per_second * seconds)))


def poll_job(
    get_job: Callable[[], dict[str, Any]],
    *,
    within: float,
    every: float,
    states: tuple[str, ...] = JOB_FINISHED,
) -> dict[str, Any]:
    """Poll get_job() (a job's JSON body) until its state is one of states; that body. The e2e
    tests give it a GET over HTTP: `poll_job(lambda: http.get(location).json(), ...)`."""

    def finished() -> dict[str, Any] | None:
        body = get_job()
        return body if body["state"] in states else None

    done = wait_until(finished, within=within, every=every)
    assert done is not None  # wait_until returns only something true
    return done


class _Body(Protocol):
    def json(self) -> Any: ...


class AsyncGetter(Protocol):
    """What wait_for_job needs of a client: httpx.AsyncClient's get."""

    async def get(self, url: str, /) -> _Body: ...


async def wait_for_job(
    client: AsyncGetter,
    location: str,
    within: float = 60,
    states: tuple[str, ...] = JOB_FINISHED,
) -> dict[str, Any]:
    """The job at location (the Location header of POST /jobs), once its state is one of states.
    The polling runs in a thread; each GET is sent back to this event loop, which keeps serving
    the in-process app meanwhile."""
    loop = asyncio.get_running_loop()

    def get_job() -> dict[str, Any]:
        body: dict[str, Any] = (
            asyncio.run_coroutine_threadsafe(client.get(location), loop).result().json()
        )
        return body

    return await asyncio.to_thread(poll_job, get_job, within=within, every=0.25, states=states)
