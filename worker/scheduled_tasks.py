"""The scheduled tasks (worker/schedules.py says when each runs). Each is called with its
schedule's name and tick, which the scheduler puts in the message, and runs through
worker/claims.py: claimed first, its database work committed with the claim's success."""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

from celery import Task
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, aliased

from core.models import Job, JobCountSnapshot, JobState, RunStatus, ScheduleRun
from core.task_names import (
    PURGE_FINISHED_JOBS_TASK,
    PURGE_SCHEDULE_RUNS_TASK,
    SNAPSHOT_JOB_COUNTS_TASK,
)
from worker import claims
from worker.app import celery_app, settings
from worker.claims import Effect
from worker.db import sessions
from worker.lease import BOOT_ID, Holder, LeasePolicy
from worker.schedules import parse_tick

log = logging.getLogger(__name__)

policy = LeasePolicy.from_settings(settings)
FINISHED = (JobState.succeeded, JobState.failed)


def _run(task: Task[..., object], schedule: str, tick: str, effect: Effect) -> str:
    holder = str(Holder(task.request.hostname or "unknown", BOOT_ID, os.getpid()))
    outcome = claims.run(
        sessions(), schedule, parse_tick(tick), effect, holder=holder, policy=policy
    )
    return outcome.value


def purge_finished_jobs_effect(session: Session, tick: datetime) -> None:
    """Finished jobs, and job count snapshots, older than JOB_RETENTION_DAYS at the tick."""
    cutoff = tick - timedelta(days=settings.job_retention_days)
    jobs = session.execute(delete(Job).where(Job.state.in_(FINISHED), Job.finished_at < cutoff))
    snapshots = session.execute(delete(JobCountSnapshot).where(JobCountSnapshot.tick < cutoff))
    log.info(
        "finished jobs purged",
        extra={"jobs": claims.rows(jobs), "snapshots": claims.rows(snapshots)},
    )


def snapshot_job_counts_effect(session: Session, tick: datetime) -> None:
    by_state = session.execute(select(Job.state, func.count()).group_by(Job.state)).tuples()
    counts = {state: count for state, count in by_state}
    session.add(
        JobCountSnapshot(
            tick=tick,
            **{state.value: counts.get(state, 0) for state in JobState},
        )
    )


def purge_schedule_runs_effect(session: Session, tick: datetime) -> None:
    """Claims older than SCHEDULE_RUN_RETENTION_DAYS, but never a schedule's newest (what its
    metrics and a starting scheduler read) nor a running one."""
    cutoff = tick - timedelta(days=settings.schedule_run_retention_days)
    newer = aliased(ScheduleRun)
    newest = (
        select(func.max(newer.tick)).where(newer.schedule == ScheduleRun.schedule).scalar_subquery()
    )
    purged = session.execute(
        delete(ScheduleRun).where(
            ScheduleRun.tick < cutoff,
            ScheduleRun.tick < newest,
            ScheduleRun.status != RunStatus.running,
        )
    )
    log.info("schedule runs purged", extra={"runs": claims.rows(purged)})


@celery_app.task(name=PURGE_FINISHED_JOBS_TASK, bind=True)
def purge_finished_jobs(self: Task[..., str], *, schedule: str, tick: str) -> str:
    return _run(self, schedule, tick, purge_finished_jobs_effect)


@celery_app.task(name=SNAPSHOT_JOB_COUNTS_TASK, bind=True)
def snapshot_job_counts(self: Task[..., str], *, schedule: str, tick: str) -> str:
    return _run(self, schedule, tick, snapshot_job_counts_effect)


@celery_app.task(name=PURGE_SCHEDULE_RUNS_TASK, bind=True)
def purge_schedule_runs(self: Task[..., str], *, schedule: str, tick: str) -> str:
    return _run(self, schedule, tick, purge_schedule_runs_effect)
