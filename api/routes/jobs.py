"""CPU-heavy jobs: accepted here, run by the Celery worker, state kept in PostgreSQL."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, Depends, HTTPException, Response, status
from starlette.concurrency import run_in_threadpool

from api.auth import require_writer
from api.deps import JobQueueDep, ReadSessionDep, SessionDep
from api.errors import RETRY_AFTER_SECONDS, error_responses
from api.job_queue import JobQueueUnavailable
from api.metrics import JOBS_QUEUED
from api.schemas import JobIn, JobOut
from core.models import Job, JobState
from core.tracing import traceparent

log = logging.getLogger(__name__)

# Every operation here can meet a database (or job queue) outage.
router = APIRouter(prefix="/jobs", tags=["jobs"], responses=error_responses(503))


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    dependencies=[Depends(require_writer)],
    responses=error_responses(400, 401, 403, 413),
)
async def submit_job(
    body: JobIn,
    db: SessionDep,
    job_queue: JobQueueDep,
    response: Response,
) -> JobOut:
    job = Job(
        cost=body.cost,
        seed=body.seed,
        state=JobState.queued,
        attempts=0,
        traceparent=traceparent(),
    )
    db.add(job)
    await db.commit()  # before sending: the worker must find the row
    await db.refresh(job)
    try:
        await run_in_threadpool(job_queue.send, str(job.id), job.traceparent)
    except JobQueueUnavailable as exc:
        log.error("job queue unavailable", extra={"job_id": str(job.id), "error": str(exc)})
        await db.delete(job)
        await db.commit()
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="the job queue is unavailable; nothing was queued, try again later",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        ) from exc
    JOBS_QUEUED.inc()
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobOut.model_validate(job)


@router.get("/{job_id}", response_model=JobOut, responses=error_responses(404))
async def get_job(job_id: uuid.UUID, db: ReadSessionDep) -> JobOut:
    job = await db.get(Job, job_id)
    if job is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, detail=f"job {job_id} not found")
    return JobOut.model_validate(job)
