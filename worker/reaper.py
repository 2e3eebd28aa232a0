"""The reaper: puts back on the queue the running jobs whose worker died.

Without it, a job running when its worker container was killed stays "running" until Redis hands
its unacknowledged message out again, after the visibility timeout (twice the task time limit,
which it must exceed so that a long job is never run twice: over ten minutes with the defaults).

A bootstep of the worker's main process looks at start, then every JOB_REAP_INTERVAL_SECONDS, for
running jobs whose lease is abandoned (worker/lease.py: heartbeat older than JOB_LEASE_SECONDS,
or holder known dead and a heartbeat missed). Each is set back to queued and its task sent again;
one that already ran JOB_MAX_ATTEMPTS times is marked failed instead. `FOR UPDATE SKIP LOCKED`:
several workers reaping at once never take the same job. The message is sent before the commit,
so a failed send leaves the job to the next round, and the delivery waits on the row lock until
the job reads queued.

The job's original message is still unacknowledged in Redis and comes back after the visibility
timeout; by then the job is finished (or running under a live lease) and that delivery is
dropped (worker/tasks.py). That is why each job still gets a single result.

Schedule claims (worker/claims.py) the same way, in a transaction of their own: a running claim
whose lease expired is released and its tick sent again, for a delivery to take over; one whose
worker died on each of JOB_MAX_ATTEMPTS runs is marked failed.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection

from celery import Celery, bootsteps
from sqlalchemy import Engine, and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job, JobState
from core.settings import Settings, get_settings
from core.sync_engine import make_sync_engine
from core.task_names import RUN_JOB_TASK
from worker import claims
from worker.bootstep_types import Repeating, Worker
from worker.lease import BOOT_ID, Holder, LeasePolicy, Reap, reap_action
from worker.metrics import JOBS_FINISHED
from worker.schedules import by_name, load, tick_text

log = logging.getLogger(__name__)

# Jobs looked at per round; more wait for the next one.
BATCH = 100


class Reaper:
    def __init__(
        self,
        app: Celery,
        settings: Settings,
        me: Holder,
        live_pids: Callable[[], Collection[int] | None] = lambda: None,
    ) -> None:
        self.app = app
        self.me = me
        self.live_pids = live_pids
        self.policy = LeasePolicy.from_settings(settings)
        self.schedules = by_name(load(settings))
        # Its own engine, without a pool: the main process forks pool processes, which must not
        # inherit an open connection. Bounded waits: the reaper runs on the worker's event loop.
        self.engine: Engine = make_sync_engine(
            settings, "reaper", connect_timeout=5, statement_timeout_ms=5000, lock_timeout_ms=5000
        )
        self.sessions: sessionmaker[Session] = sessionmaker(self.engine)

    def reap(self) -> list[tuple[str, Reap]]:
        """One round; returns what it did, as (job id, action)."""
        done: list[tuple[str, Reap]] = []
        with self.sessions.begin() as session:
            now = session.execute(select(func.now())).scalar_one()
            # Candidates only (reap_action decides): missed a heartbeat, or started without
            # leases and past the time limit.
            rows = session.execute(
                select(
                    Job.id,
                    Job.worker,
                    Job.heartbeat_at,
                    Job.started_at,
                    Job.attempts,
                    Job.traceparent,
                )
                .where(
                    Job.state == JobState.running,
                    or_(
                        Job.heartbeat_at < now - self.policy.missed_beat,
                        and_(
                            Job.heartbeat_at.is_(None),
                            or_(
                                Job.started_at.is_(None),
                                Job.started_at < now - self.policy.unrenewed,
                            ),
                        ),
                    ),
                )
                .order_by(Job.heartbeat_at.nulls_first())
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            ).all()
            live = self.live_pids() if rows else None
            for row in rows:
                seen = row.heartbeat_at or row.started_at
                action = reap_action(
                    Holder.parse(row.worker),
                    row.heartbeat_at,
                    row.started_at,
                    row.attempts,
                    now,
                    self.policy,
                    me=self.me,
                    live_pids=live,
                )
                if action is None:
                    continue
                job = update(Job).where(Job.id == row.id)
                facts = {
                    "job_id": str(row.id),
                    "stale_worker": row.worker,
                    "last_seen": seen.isoformat() if seen else None,
                    "attempts": row.attempts,
                }
                if action is Reap.REQUEUE:
                    session.execute(job.values(state=JobState.queued, worker=None))
                    # In the trace of the request that queued it (its run continues this parent).
                    context = {"traceparent": row.traceparent} if row.traceparent else None
                    self.app.send_task(RUN_JOB_TASK, args=[str(row.id)], headers=context)
                    log.warning("job's worker is gone, job queued again", extra=facts)
                else:
                    session.execute(
                        job.values(
                            state=JobState.failed,
                            error=f"worker lost during each of {row.attempts} attempts",
                            finished_at=now,
                        )
                    )
                    log.error("job's worker is gone again, job failed", extra=facts)
                done.append((str(row.id), action))
        # Counted once committed: a rolled-back round failed no job.
        given_up = sum(1 for _, action in done if action is not Reap.REQUEUE)
        if given_up:
            JOBS_FINISHED.labels(state=JobState.failed.value).inc(given_up)
        self.reap_claims()
        return done

    def reap_claims(self) -> list[tuple[str, str, Reap]]:
        """One round over schedule claims: (schedule, tick, action)."""
        done: list[tuple[str, str, Reap]] = []
        with self.sessions.begin() as session:
            for name, tick, attempts in claims.abandoned(session, self.policy, BATCH):
                facts = {"schedule": name, "tick": tick_text(tick), "attempts": attempts}
                schedule = self.schedules.get(name)
                if schedule is None or attempts >= self.policy.max_attempts:
                    claims.give_up(session, name, tick, attempts)
                    log.error("schedule tick's worker is gone again, tick failed", extra=facts)
                    done.append((name, tick_text(tick), Reap.FAIL))
                    continue
                claims.release(session, name, tick)
                # Sent before the commit, as a job's: a failed send leaves it to the next round.
                self.app.send_task(
                    schedule.task,
                    args=list(schedule.args),
                    kwargs={"schedule": name, "tick": tick_text(tick)},
                )
                log.warning("schedule tick's worker is gone, tick sent again", extra=facts)
                done.append((name, tick_text(tick), Reap.REQUEUE))
        return done

    def reap_safely(self) -> None:
        """On the worker's timer: an error (database or broker away) waits for the next round."""
        try:
            self.reap()
        except Exception as exc:
            log.warning("job reaper round failed", extra={"error": repr(exc)})

    def close(self) -> None:
        self.engine.dispose()


def _pool_pids(worker: Worker) -> frozenset[int] | None:
    """The pool's process ids (prefork); None where the pool does not list them."""
    try:
        pids = worker.pool.info.get("processes")
    except Exception:
        return None
    return frozenset(pids) if pids is not None else None


class JobReaper(bootsteps.StartStopStep):
    requires = ("celery.worker.components:Timer", "celery.worker.components:Pool")

    def __init__(self, parent: object, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Repeating | None = None
        self.reaper: Reaper | None = None

    def start(self, worker: Worker) -> None:
        settings = get_settings()
        self.reaper = Reaper(
            worker.app,
            settings,
            me=Holder(worker.hostname, BOOT_ID, os.getpid()),
            live_pids=lambda: _pool_pids(worker),
        )
        # At start: a worker restarted after a kill takes back its own jobs whose heartbeat is
        # already late, without waiting for the lease (the others at the next rounds).
        self.reaper.reap_safely()
        self.tref = worker.timer.call_repeatedly(
            settings.job_reap_interval_seconds, self.reaper.reap_safely
        )

    def stop(self, worker: Worker) -> None:
        if self.tref is not None:
            self.tref.cancel()
        if self.reaper is not None:
            self.reaper.close()
