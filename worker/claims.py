"""Claims: each tick of a schedule runs once, however many messages carry it.

A tick's message can arrive more than once: two schedulers send it (a deploy runs the new one
beside the old), a restarted scheduler sends its latest tick again, Redis redelivers an
unacknowledged message, the reaper resends an abandoned claim. Before anything else a delivery
claims the tick: INSERT ... ON CONFLICT DO NOTHING into schedule_runs, whose key is (schedule,
tick). The one that inserts runs the task; the others find the claim finished, or held by a live
process, and do nothing (logged at INFO).

A claim has a lease, as a job has (worker/lease.py): its process renews heartbeat_at while the
task runs. A claim whose heartbeat is older than JOB_LEASE_SECONDS lost its process; the reaper
releases it (worker NULL) and sends the tick again, and the next delivery takes it over with one
UPDATE ... WHERE the claim is released or expired: of two deliveries racing, exactly one matches.
The task's database work is done in one transaction with marking the claim succeeded, and that
UPDATE matches only while this process still holds the claim: a run that was taken over commits
nothing. What a task does outside the database must still be idempotent (docs/schedules.md).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, cast

from sqlalchemy import CursorResult, Result, Update, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from core.models import RunStatus, ScheduleRun
from worker.lease import Heartbeat, LeasePolicy
from worker.schedules import tick_text

log = logging.getLogger(__name__)

# The task's database work, in the session of the transaction that marks the claim succeeded. It
# must not commit: run() does, or rolls it back.
Effect = Callable[[Session, datetime], None]

ERROR_CHARS = 2000


class Claim(enum.StrEnum):
    NEW = "new"
    TAKEN_OVER = "taken-over"
    FINISHED = "finished"
    LEASED = "leased"
    GAVE_UP = "gave-up"


class Outcome(enum.StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    # Taken over while it ran (its lease expired): its work was rolled back.
    LOST = "lost"


def rows(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


def _the_run(schedule: str, tick: datetime) -> tuple[Any, ...]:
    return (ScheduleRun.schedule == schedule, ScheduleRun.tick == tick)


def claim(
    session: Session, schedule: str, tick: datetime, holder: str, policy: LeasePolicy
) -> tuple[Claim, int]:
    """Claims the tick for holder, in the caller's transaction: (what happened, the attempt)."""
    inserted = session.execute(
        insert(ScheduleRun)
        .values(
            schedule=schedule,
            tick=tick,
            status=RunStatus.running,
            worker=holder,
            heartbeat_at=func.now(),
            attempts=1,
        )
        .on_conflict_do_nothing(index_elements=["schedule", "tick"])
        .returning(ScheduleRun.attempts)
    ).scalar_one_or_none()
    if inserted is not None:
        return Claim.NEW, inserted
    abandoned = or_(
        ScheduleRun.worker.is_(None), ScheduleRun.heartbeat_at < func.now() - policy.lease
    )
    # Under READ COMMITTED a second taker waits for the first's row lock, then re-checks the
    # WHERE against the row the first wrote (fresh heartbeat, its holder): it matches nothing.
    taken = session.execute(
        update(ScheduleRun)
        .where(
            *_the_run(schedule, tick),
            ScheduleRun.status == RunStatus.running,
            abandoned,
            ScheduleRun.attempts < policy.max_attempts,
        )
        .values(worker=holder, heartbeat_at=func.now(), attempts=ScheduleRun.attempts + 1)
        .returning(ScheduleRun.attempts)
    ).scalar_one_or_none()
    if taken is not None:
        return Claim.TAKEN_OVER, taken
    row = session.execute(
        select(ScheduleRun.status, abandoned, ScheduleRun.attempts)
        .where(*_the_run(schedule, tick))
        .with_for_update()
    ).one()
    if row[0] != RunStatus.running:
        return Claim.FINISHED, row[2]
    if not row[1]:
        return Claim.LEASED, row[2]
    give_up(session, schedule, tick, row[2])
    return Claim.GAVE_UP, row[2]


def give_up(session: Session, schedule: str, tick: datetime, attempts: int) -> None:
    """A claim whose worker died on each of max_attempts runs: failed, never handed out again."""
    session.execute(
        update(ScheduleRun)
        .where(*_the_run(schedule, tick), ScheduleRun.status == RunStatus.running)
        .values(
            status=RunStatus.failed,
            error=f"worker lost during each of {attempts} attempts",
            finished_at=func.now(),
        )
    )


def _holding(schedule: str, tick: datetime, holder: str, attempt: int) -> Update:
    """The claim's row, as long as this run still holds it."""
    return update(ScheduleRun).where(
        *_the_run(schedule, tick),
        ScheduleRun.status == RunStatus.running,
        ScheduleRun.worker == holder,
        ScheduleRun.attempts == attempt,
    )


def run(
    sessions: sessionmaker[Session],
    schedule: str,
    tick: datetime,
    effect: Effect,
    *,
    holder: str,
    policy: LeasePolicy,
) -> Outcome:
    """Claims the tick, then runs effect and marks the claim succeeded in one transaction; a
    failure marks it failed. Logs every outcome with the schedule and the tick."""
    facts: dict[str, object] = {"schedule": schedule, "tick": tick_text(tick)}
    with sessions.begin() as session:
        decision, attempt = claim(session, schedule, tick, holder, policy)
    if decision is Claim.FINISHED:
        log.info("schedule tick already run, dropping this delivery", extra=facts)
        return Outcome.SKIPPED
    if decision is Claim.LEASED:
        log.info(
            "schedule tick running in another live process, dropping this delivery", extra=facts
        )
        return Outcome.SKIPPED
    if decision is Claim.GAVE_UP:
        log.error(
            "schedule tick's worker was lost on every attempt, marking it failed", extra=facts
        )
        return Outcome.FAILED
    if decision is Claim.TAKEN_OVER:
        log.warning("schedule tick's claim was abandoned, taking it over", extra=facts)
    facts["attempt"] = attempt
    holding = _holding(schedule, tick, holder, attempt)

    def renew() -> bool:
        with sessions.begin() as beat:
            return rows(beat.execute(holding.values(heartbeat_at=func.now()))) == 1

    log.info("schedule tick started", extra=facts)
    session = sessions()
    try:
        with Heartbeat(renew, policy.heartbeat.total_seconds(), name="schedule-heartbeat"):
            effect(session, tick)
        # After the heartbeat stopped: its UPDATE never waits on this transaction's row lock.
        done = session.execute(
            holding.values(status=RunStatus.succeeded, finished_at=func.now(), error=None)
        )
        if rows(done) != 1:
            session.rollback()
            log.warning(
                "schedule tick was taken over while it ran; its work rolled back", extra=facts
            )
            return Outcome.LOST
        session.commit()
    except Exception as exc:  # the task's failure, whatever it is, is this tick's outcome
        session.rollback()
        session.close()
        with sessions.begin() as failed:
            failed.execute(
                holding.values(
                    status=RunStatus.failed, error=repr(exc)[:ERROR_CHARS], finished_at=func.now()
                )
            )
        log.error("scheduled task failed", extra={**facts, "error": repr(exc)}, exc_info=True)
        return Outcome.FAILED
    finally:
        session.close()
    log.info("schedule tick succeeded", extra=facts)
    return Outcome.SUCCEEDED


def abandoned(session: Session, policy: LeasePolicy, batch: int) -> list[tuple[str, datetime, int]]:
    """Running claims whose lease expired, locked (skipping those another reaper holds):
    (schedule, tick, attempts)."""
    found = session.execute(
        select(ScheduleRun.schedule, ScheduleRun.tick, ScheduleRun.attempts)
        .where(
            ScheduleRun.status == RunStatus.running,
            ScheduleRun.heartbeat_at < func.now() - policy.lease,
        )
        .order_by(ScheduleRun.heartbeat_at)
        .limit(batch)
        .with_for_update(skip_locked=True)
    ).tuples()
    return list(found)


def release(session: Session, schedule: str, tick: datetime) -> None:
    """Nobody holds the claim now: the next delivery of its tick takes it over. Its heartbeat
    restarts, so the reaper sends the tick again only if that delivery is lost too."""
    session.execute(
        update(ScheduleRun)
        .where(*_the_run(schedule, tick), ScheduleRun.status == RunStatus.running)
        .values(worker=None, heartbeat_at=func.now())
    )
