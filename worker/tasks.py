"""The job task. Each job gets a single result, however often its message is delivered.

A job's message can arrive more than once: Redis hands an unacknowledged message out again after
the visibility timeout, a lost pool process's message is requeued at once, and the reaper
(worker/reaper.py) sends a new one for a job whose worker died. Under the row's lock, a delivery
runs the job only if it is queued, or running under an expired lease (worker/lease.py); it skips
a finished job, and drops a duplicate of a job another live process is running. The result is
written only by the process still holding the lease, so a run that was taken over (its process
stalled past the lease) cannot overwrite the result of the run that replaced it. The computation
is deterministic: a run cut off mid-way simply runs again.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any, cast

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from sqlalchemy import CursorResult, Result, Update, func, select, update

from core.models import Job, JobState
from core.task_names import RUN_JOB_TASK
from worker.app import celery_app, settings
from worker.compute import iterated_sha256
from worker.db import reset_after_fork, sessions
from worker.lease import BOOT_ID, Delivery, Heartbeat, Holder, LeasePolicy, decide_delivery
from worker.metrics import JOBS_FINISHED

log = logging.getLogger(__name__)

policy = LeasePolicy.from_settings(settings)


@worker_process_init.connect
def _fresh_engine_per_process(**_: object) -> None:
    reset_after_fork()


def _holding(job_id: uuid.UUID, holder: str, attempt: int) -> Update:
    """The job's row, as long as this run still holds its lease."""
    return update(Job).where(
        Job.id == job_id,
        Job.state == JobState.running,
        Job.worker == holder,
        Job.attempts == attempt,
    )


def _rows(result: Result[Any]) -> int:
    """Rows an UPDATE matched (a CursorResult; Session.execute is typed as the base Result)."""
    return int(cast(CursorResult[Any], result).rowcount)


def _renew(job_id: uuid.UUID, holder: str, attempt: int) -> bool:
    with sessions().begin() as session:
        renewed = session.execute(_holding(job_id, holder, attempt).values(heartbeat_at=func.now()))
        return _rows(renewed) == 1


def _finish(job_id: uuid.UUID, holder: str, attempt: int, **values: object) -> bool:
    with sessions().begin() as session:
        done = session.execute(
            _holding(job_id, holder, attempt).values(**values, finished_at=func.now())
        )
        return _rows(done) == 1


@celery_app.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Task[[str], None], job_id: str) -> None:
    jid = uuid.UUID(job_id)
    holder = str(Holder(self.request.hostname or "unknown", BOOT_ID, os.getpid()))
    with sessions().begin() as session:
        row = session.execute(
            select(Job, func.now()).where(Job.id == jid).with_for_update()
        ).one_or_none()
        if row is None:
            log.warning("job not found, dropping", extra={"job_id": job_id})
            return
        job, now = row
        last_seen, lease = policy.expiry(job.heartbeat_at, job.started_at)
        decision = decide_delivery(
            job.state,
            last_seen,
            now,
            lease,
            attempts=job.attempts,
            max_attempts=policy.max_attempts,
        )
        if decision is Delivery.SKIP_FINISHED:
            log.info("job already finished, skipping redelivery", extra={"job_id": job_id})
            return
        if decision is Delivery.SKIP_LEASED:
            log.info(
                "job running in another live process, dropping this duplicate delivery",
                extra={"job_id": job_id, "lease_holder": job.worker},
            )
            return
        if decision is Delivery.GIVE_UP:
            log.error(
                "job's worker was lost on every attempt, marking it failed",
                extra={"job_id": job_id, "attempts": job.attempts, "lease_holder": job.worker},
            )
            job.state = JobState.failed
            job.error = f"worker lost during each of {job.attempts} attempts"
            job.finished_at = now
            JOBS_FINISHED.labels(state=JobState.failed.value).inc()
            return
        if job.state == JobState.running:
            log.warning(
                "job's lease expired, running it again",
                extra={"job_id": job_id, "stale_worker": job.worker},
            )
        job.state = JobState.running
        job.attempts += 1
        job.started_at = job.heartbeat_at = now
        job.worker = holder
        seed, cost, attempt = job.seed, job.cost, job.attempts
    log.info("job started", extra={"job_id": job_id, "cost": cost, "attempt": attempt})
    try:
        with Heartbeat(lambda: _renew(jid, holder, attempt), settings.job_heartbeat_seconds):
            result = iterated_sha256(seed, cost)
    except SoftTimeLimitExceeded:
        if _finish(jid, holder, attempt, state=JobState.failed, error="time limit exceeded"):
            log.error("job hit its time limit", extra={"job_id": job_id})
            JOBS_FINISHED.labels(state=JobState.failed.value).inc()
        return
    if _finish(jid, holder, attempt, state=JobState.succeeded, result=result, error=None):
        log.info("job succeeded", extra={"job_id": job_id, "attempt": attempt})
        JOBS_FINISHED.labels(state=JobState.succeeded.value).inc()
    else:
        log.warning(
            "job finished after its lease was taken over; result left to the run that holds it",
            extra={"job_id": job_id, "attempt": attempt},
        )
