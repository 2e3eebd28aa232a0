"""Jobs: queued by the api, run by the stack's real Celery worker, state in PostgreSQL: the
example of a job's tests.

A job is sent through the in-process app (`client`, with `auth` for the write), run by the test
stack's worker (built from this checkout, so it runs the code under test), and waited for with
`wait_for_job`, which polls its Location until it has finished. `stack` drives the compose stack
itself: here it stops the worker and kills Redis.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx

from tests.support.auth import Headers
from tests.support.jobs import wait_for_job
from tests.support.stack import Stack, run
from worker.compute import iterated_sha256


async def test_job_runs_and_gives_the_deterministic_result(
    client: httpx.AsyncClient, auth: Headers
) -> None:
    r = await client.post("/jobs", json={"cost": 20_000, "seed": "abc"}, headers=auth)
    assert r.status_code == 202
    body = r.json()
    assert body["state"] == "queued"
    assert r.headers["location"] == f"/jobs/{body['id']}"
    done = await wait_for_job(client, r.headers["location"])
    assert done["state"] == "succeeded"
    assert done["result"] == iterated_sha256("abc", 20_000)
    assert done["attempts"] == 1
    assert done["started_at"] <= done["finished_at"]


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    r = await client.get(f"/jobs/{missing}")
    assert r.status_code == 404
    assert str(missing) in r.json()["detail"]


async def test_a_queued_job_survives_redis_killed_hard(
    client: httpx.AsyncClient, auth: Headers, stack: Stack
) -> None:
    """The job is only in Redis's queue when Redis dies: no worker has taken it (the worker is
    stopped), and Redis is SIGKILLed, so it saves nothing on the way down. The append-only file
    (fsync every second) brings the queue back; the job then runs once."""
    stack.compose("stop", "worker")
    try:
        r = await client.post("/jobs", json={"cost": 200_000, "seed": "aof"}, headers=auth)
        assert r.status_code == 202
        location = r.headers["location"]
        await asyncio.sleep(1.5)  # appendfsync everysec: older than a second is on disk
        redis = stack.container_ids("redis")[0]
        run(["docker", "kill", "--signal", "KILL", redis])
        stack.compose("start", "redis")
        stack.wait_healthy("redis")
        assert (await client.get(location)).json()["state"] == "queued"
    finally:
        stack.compose("start", "worker")
        stack.wait_healthy("worker")
    done = await wait_for_job(client, location, within=90)
    assert done["state"] == "succeeded"
    assert done["attempts"] == 1
    assert done["result"] == iterated_sha256("aof", 200_000)
