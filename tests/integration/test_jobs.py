"""Jobs: queued by the api, run by the stack's real Celery worker, state in PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from tests.integration.conftest import wait_for_job
from worker.compute import iterated_sha256

pytestmark = pytest.mark.integration


async def test_job_runs_and_gives_the_deterministic_result(client, auth):
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


async def test_unknown_job_is_404(client):
    missing = uuid.uuid4()
    r = await client.get(f"/jobs/{missing}")
    assert r.status_code == 404
    assert str(missing) in r.json()["detail"]


async def test_job_state_survives_a_redis_restart(client, auth, stack):
    """Queued before the restart, finished after it: the queue (AOF) and the state (PostgreSQL)
    both outlive Redis."""
    r = await client.post("/jobs", json={"cost": 1_500_000, "seed": "restart"}, headers=auth)
    location = r.headers["location"]
    stack.compose("restart", "redis")
    stack.wait_healthy("redis")
    done = await wait_for_job(client, location, within=90)
    assert done["state"] == "succeeded"
    assert done["result"] == iterated_sha256("restart", 1_500_000)
