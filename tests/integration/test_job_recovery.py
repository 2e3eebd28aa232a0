"""A killed worker's running jobs run again soon after it returns: the reaper, not Redis.

The worker is recreated with a visibility timeout of 600 s for this test, so Redis cannot hand the
killed worker's unacknowledged messages out again in time: only the job leases and the reaper
(worker/lease.py, worker/reaper.py) can bring the interrupted jobs back within the 60 s asked.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from sqlalchemy import text

from api.schemas import JOB_MAX_COST
from tests.support import stack as stack_module
from tests.support.jobs import cost_for, wait_for_job
from worker.compute import iterated_sha256

# The requirement: picked up again within this many seconds of the worker coming back.
RECOVERY_SECONDS = 60
# How long each job should run: long enough to be killed mid-way, short enough for a test.
JOB_SECONDS = 8.0
JOBS = 3  # the test worker runs 2 at a time (tests/compose.test.yaml): 2 interrupted, 1 queued
# Far above the recovery time: a redelivery by Redis would come much too late to pass.
LONG_LIMITS = {
    "KIT_TEST_CELERY_TASK_TIME_LIMIT": "120",
    "KIT_TEST_CELERY_VISIBILITY_TIMEOUT": "600",
}


async def _states(client, locations: list[str]) -> dict[str, dict]:
    bodies = await asyncio.gather(*(client.get(loc) for loc in locations))
    return {loc: body.json() for loc, body in zip(locations, bodies, strict=True)}


async def _db_now(app) -> datetime:
    async with app.state.engine.connect() as conn:
        return (await conn.execute(text("SELECT now()"))).scalar_one()


def _wait(condition, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise TimeoutError(f"{what} not within {within}s")


async def test_killed_workers_running_jobs_rerun_within_60s_of_its_return(client, auth, stack, app):
    cost = cost_for(JOB_SECONDS, JOB_MAX_COST)
    stack.compose("up", "-d", "--wait", "--no-deps", "worker", **LONG_LIMITS)
    try:
        seeds = [f"reaper-{i}" for i in range(JOBS)]
        locations = []
        for seed in seeds:
            r = await client.post("/jobs", json={"cost": cost, "seed": seed}, headers=auth)
            assert r.status_code == 202, r.text
            locations.append(r.headers["location"])

        deadline = time.monotonic() + 60
        while not any(b["state"] == "running" for b in (await _states(client, locations)).values()):
            assert time.monotonic() < deadline, "no job started within 60 s"
            await asyncio.sleep(0.2)
        await asyncio.sleep(1)  # the second pool process takes its job too
        before = await _states(client, locations)
        interrupted = [loc for loc, b in before.items() if b["state"] == "running"]
        assert interrupted, before

        container = stack.container_ids("worker")[0]
        restarts = stack.inspect(container)["RestartCount"]
        stack_module.run(["docker", "kill", container])  # SIGKILL: no warm shutdown, no ack
        # The engine may or may not restart a container killed by `docker kill`
        # (unless-stopped); either way the worker must be dead before it is started again.
        _wait(
            lambda: (
                not (state := stack.inspect(container))["State"]["Running"]
                or state["RestartCount"] > restarts
            ),
            within=30,
            what="the killed worker to stop",
        )
        killed = await _states(client, locations)
        assert all(killed[loc]["state"] == "running" for loc in interrupted), killed

        stack.compose("start", "worker", check=False)
        back_at = time.monotonic()
        back_db = await _db_now(app)
        stack.wait_healthy("worker", timeout=90)

        # Every job finishes: the interrupted ones rerun, queued behind at most one other job.
        budget = RECOVERY_SECONDS + 3 * 2 * JOB_SECONDS
        done = {}
        for loc in locations:
            remaining = max(1.0, back_at + budget - time.monotonic())
            done[loc] = await wait_for_job(client, loc, within=remaining)

        for loc, seed in zip(locations, seeds, strict=True):
            assert done[loc]["state"] == "succeeded", done[loc]
            assert done[loc]["result"] == iterated_sha256(seed, cost)
            assert done[loc]["attempts"] in (1, 2), done[loc]
        for loc in interrupted:
            job = done[loc]
            assert job["attempts"] == 2, job  # cut off once, run once more: never a third time
            rerun_after = datetime.fromisoformat(job["started_at"]) - back_db
            assert rerun_after.total_seconds() <= RECOVERY_SECONDS, (
                f"{loc} rerun {rerun_after} after the worker's return"
            )

        reaped = [
            line for line in stack.logs("worker", tail=3000).splitlines() if "queued again" in line
        ]
        for loc in interrupted:
            job_id = loc.rsplit("/", 1)[1]
            assert any(job_id in line for line in reaped), f"no reaper line for {job_id}: {reaped}"
    finally:
        # Back to the stack's own limits for the other tests.
        stack.compose("up", "-d", "--wait", "--no-deps", "worker")
