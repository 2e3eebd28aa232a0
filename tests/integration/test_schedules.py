"""Claims on the stack's real PostgreSQL, and ticks run by its real worker: a tick sent twice runs
once, an expired claim is taken over exactly once, a failure is recorded and logged with its
schedule and tick, a run taken over meanwhile commits nothing, and the reaper resends an
abandoned claim for a worker to finish.

Ticks here are not on the 5-s grid the stack's scheduler sends (they carry microseconds), so its
own ticks never collide with them.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from core.celery_config import make_celery
from core.models import JobCountSnapshot, RunStatus, ScheduleRun
from core.settings import get_settings
from core.sync_engine import make_sync_engine
from core.task_names import SNAPSHOT_JOB_COUNTS_TASK
from tests.support.stack import wait_until
from worker import claims
from worker.claims import Outcome
from worker.lease import Holder, LeasePolicy
from worker.reaper import Reaper
from worker.schedules import tick_text
from worker.schedules_report import lines

SCHEDULE = "snapshot-job-counts"


@pytest.fixture(scope="module")
def sessions(stack) -> Iterator[sessionmaker[Session]]:
    engine = make_sync_engine(get_settings(), "schedule-tests", pooled=True)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def tick(sessions) -> Iterator[datetime]:
    """A tick of its own (microseconds: never one the scheduler sends), removed afterwards."""
    moment = datetime.now(UTC).replace(microsecond=random.randint(1, 999_999))
    yield moment
    with sessions.begin() as session:
        session.execute(delete(ScheduleRun).where(ScheduleRun.tick == moment))
        session.execute(delete(JobCountSnapshot).where(JobCountSnapshot.tick == moment))


@pytest.fixture(scope="module")
def policy() -> LeasePolicy:
    return LeasePolicy.from_settings(get_settings())


def _running_claim(
    sessions: sessionmaker[Session], tick: datetime, worker: str, heartbeat_age: timedelta
) -> None:
    """A first attempt's claim, still running, last renewed heartbeat_age ago."""
    with sessions.begin() as session:
        session.add(
            ScheduleRun(
                schedule=SCHEDULE,
                tick=tick,
                status=RunStatus.running,
                worker=worker,
                heartbeat_at=datetime.now(UTC) - heartbeat_age,
                attempts=1,
            )
        )


def _claim(sessions: sessionmaker[Session], tick: datetime) -> ScheduleRun | None:
    with sessions() as session:
        return session.get(ScheduleRun, (SCHEDULE, tick))


def _snapshots(sessions: sessionmaker[Session], tick: datetime) -> int:
    with sessions() as session:
        return session.execute(
            select(func.count()).where(JobCountSnapshot.tick == tick)
        ).scalar_one()


def _snapshot(session: Session, tick: datetime) -> None:
    from worker.scheduled_tasks import snapshot_job_counts_effect

    snapshot_job_counts_effect(session, tick)


def test_a_tick_sent_twice_runs_once(stack, sessions, tick):
    """Two messages for one tick, as two schedulers send them, to the real worker."""
    client = make_celery(get_settings())
    for _ in range(2):
        client.send_task(
            SNAPSHOT_JOB_COUNTS_TASK, kwargs={"schedule": SCHEDULE, "tick": tick_text(tick)}
        )

    def finished() -> bool:
        run = _claim(sessions, tick)
        return run is not None and run.status == RunStatus.succeeded

    wait_until(finished, within=30)

    def dropped() -> bool:
        return any(
            tick_text(tick) in line and ("already run" in line or "another live process" in line)
            for line in stack.logs("worker", tail=500).splitlines()
        )

    wait_until(dropped, within=30)
    run = _claim(sessions, tick)
    assert run is not None
    assert (run.status, run.attempts) == (RunStatus.succeeded, 1)
    assert _snapshots(sessions, tick) == 1


def test_an_expired_claim_is_taken_over_exactly_once(sessions, tick, policy):
    """A claim whose worker died (heartbeat an hour old), and two deliveries racing for it."""
    _running_claim(sessions, tick, "dead/boot/1", timedelta(hours=1))
    outcomes: list[Outcome] = []
    start = threading.Barrier(2)

    def deliver(holder: str) -> None:
        start.wait()
        outcomes.append(
            claims.run(sessions, SCHEDULE, tick, _snapshot, holder=holder, policy=policy)
        )

    threads = [threading.Thread(target=deliver, args=(f"w{i}/boot/1",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == sorted([Outcome.SUCCEEDED, Outcome.SKIPPED])
    run = _claim(sessions, tick)
    assert run is not None
    assert (run.status, run.attempts) == (RunStatus.succeeded, 2)
    assert run.worker in {"w0/boot/1", "w1/boot/1"}
    assert _snapshots(sessions, tick) == 1
    # And once finished, any later delivery does nothing.
    again = claims.run(sessions, SCHEDULE, tick, _snapshot, holder="w2/boot/1", policy=policy)
    assert again is Outcome.SKIPPED
    assert _snapshots(sessions, tick) == 1


def test_a_live_claim_is_left_to_its_holder(sessions, tick, policy):
    _running_claim(sessions, tick, "alive/boot/1", timedelta(0))
    outcome = claims.run(sessions, SCHEDULE, tick, _snapshot, holder="w/boot/1", policy=policy)
    assert outcome is Outcome.SKIPPED
    run = _claim(sessions, tick)
    assert run is not None
    assert (run.status, run.worker, run.attempts) == (RunStatus.running, "alive/boot/1", 1)
    assert _snapshots(sessions, tick) == 0


def test_a_failing_task_is_recorded_and_logged_with_schedule_and_tick(
    sessions, tick, policy, caplog
):
    def broken(session: Session, tick: datetime) -> None:
        _snapshot(session, tick)
        raise RuntimeError("report server refused")

    with caplog.at_level(logging.ERROR, logger="worker.claims"):
        outcome = claims.run(sessions, SCHEDULE, tick, broken, holder="w/boot/1", policy=policy)
    assert outcome is Outcome.FAILED
    run = _claim(sessions, tick)
    assert run is not None
    assert run.status == RunStatus.failed
    assert "report server refused" in (run.error or "")
    # Its database work was rolled back with it.
    assert _snapshots(sessions, tick) == 0
    [record] = [r for r in caplog.records if r.getMessage() == "scheduled task failed"]
    assert (record.schedule, record.tick) == (SCHEDULE, tick_text(tick))


def test_a_run_taken_over_meanwhile_commits_nothing(sessions, tick, policy):
    def stalled(session: Session, tick: datetime) -> None:
        _snapshot(session, tick)
        # While it ran, its lease expired and another worker took the claim.
        with sessions.begin() as other:
            other.execute(
                update(ScheduleRun)
                .where(ScheduleRun.schedule == SCHEDULE, ScheduleRun.tick == tick)
                .values(worker="other/boot/1", attempts=ScheduleRun.attempts + 1)
            )

    outcome = claims.run(sessions, SCHEDULE, tick, stalled, holder="w/boot/1", policy=policy)
    assert outcome is Outcome.LOST
    assert _snapshots(sessions, tick) == 0
    run = _claim(sessions, tick)
    assert run is not None
    assert (run.status, run.worker) == (RunStatus.running, "other/boot/1")


def test_the_reaper_resends_an_abandoned_claim_and_a_worker_finishes_it(stack, sessions, tick):
    _running_claim(sessions, tick, "dead/boot/1", timedelta(hours=1))
    settings = get_settings()
    reaper = Reaper(make_celery(settings), settings, me=Holder("tests", "boot", 1))
    try:
        done = reaper.reap_claims()
    finally:
        reaper.close()
    # Unless the worker's own reaper (every JOB_REAP_INTERVAL_SECONDS) took it a moment before.
    taken_by_worker = (_claim(sessions, tick) or ScheduleRun()).worker != "dead/boot/1"
    assert (SCHEDULE, tick_text(tick)) in {(n, t) for n, t, _ in done} or taken_by_worker

    def finished() -> bool:
        run = _claim(sessions, tick)
        return run is not None and run.status == RunStatus.succeeded

    wait_until(finished, within=30)
    run = _claim(sessions, tick)
    assert run is not None
    assert run.attempts == 2
    assert _snapshots(sessions, tick) == 1


def test_make_schedules_lists_each_schedule_with_its_last_and_next_run(stack):
    """The operator's view (make schedules, in the stack's worker): the stack's 5-s schedules
    have run, and each line has its rule, last run, status and next run."""

    def listed() -> list[str]:
        return stack.make("schedules").stdout.splitlines()

    def ran() -> list[str] | None:
        out = listed()
        rows = [line for line in out if line.startswith(SCHEDULE)]
        return out if rows and "succeeded" in rows[0] else None

    out = wait_until(ran, within=30, every=1)
    header = next(line for line in out if line.startswith("SCHEDULE"))
    columns = lines([])[0].split("  ")
    assert [c.strip() for c in header.split("  ") if c.strip()] == columns, header
    names = {line.split()[0] for line in out[out.index(header) + 1 :]}
    assert names == {"purge-finished-jobs", SCHEDULE, "purge-schedule-runs"}
    row = next(line for line in out if line.startswith(SCHEDULE)).split()
    last, next_run = datetime.fromisoformat(row[-4]), datetime.fromisoformat(row[-2])
    assert last < datetime.now(UTC) < next_run, row
