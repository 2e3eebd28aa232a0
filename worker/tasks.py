"""The job task. Idempotent: a redelivered job that already finished is not run again, and one
that was cut off mid-way simply runs again (the computation is deterministic)."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime

from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import worker_process_init
from sqlalchemy import update

from core.jobs import RUN_JOB_TASK
from core.models import Job, JobState
from worker.app import celery_app
from worker.compute import iterated_sha256
from worker.db import reset_after_fork, sessions

log = logging.getLogger(__name__)


@worker_process_init.connect
def _fresh_engine_per_process(**_: object) -> None:
    reset_after_fork()


def _set(job_id: uuid.UUID, **values: object) -> None:
    with sessions().begin() as session:
        session.execute(update(Job).where(Job.id == job_id).values(**values))


@celery_app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    jid = uuid.UUID(job_id)
    with sessions().begin() as session:
        job = session.get(Job, jid, with_for_update=True)
        if job is None:
            log.warning("job not found, dropping", extra={"job_id": job_id})
            return
        if job.state in (JobState.succeeded, JobState.failed):
            log.info("job already finished, skipping redelivery", extra={"job_id": job_id})
            return
        job.state = JobState.running
        job.attempts += 1
        job.started_at = datetime.now(UTC)
        seed, cost, attempt = job.seed, job.cost, job.attempts
    log.info("job started", extra={"job_id": job_id, "cost": cost, "attempt": attempt})
    try:
        result = iterated_sha256(seed, cost)
    except SoftTimeLimitExceeded:
        _set(jid, state=JobState.failed, error="time limit exceeded", finished_at=datetime.now(UTC))
        log.error("job hit its time limit", extra={"job_id": job_id})
        return
    _set(jid, state=JobState.succeeded, result=result, error=None, finished_at=datetime.now(UTC))
    log.info("job succeeded", extra={"job_id": job_id, "attempt": attempt})
