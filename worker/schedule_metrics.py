"""Each schedule's state, read from the claims table (schedule_runs): what the job exporter serves
(worker/queue_exporter.py) and `make schedules` prints (worker/schedules_report.py).

Lateness is how long the schedule's first tick after its last success has been due: 0 while the
last success is the latest due tick, growing while ticks are missed or fail or wait in the queue.
With no success at all it counts from `since` (the exporter's start). A claim still running past
its lease lost its worker and counts as failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy import Connection, and_, func, or_, select

from core.models import RunStatus, ScheduleRun
from worker.schedules import Schedule

# The window of schedule_failures_recent.
RECENT = timedelta(hours=1)


@dataclass(frozen=True)
class ScheduleState:
    schedule: Schedule
    last_tick: datetime | None
    last_status: str | None
    last_success: datetime | None
    next_tick: datetime
    lateness: float
    last_finished_failed: bool
    recent_failures: int


def lateness(
    schedule: Schedule, last_success: datetime | None, since: datetime, now: datetime
) -> float:
    first_due = schedule.when.next_after(last_success or since)
    return max(0.0, (now - first_due).total_seconds())


def read(
    connection: Connection,
    schedules: Sequence[Schedule],
    lease: timedelta,
    since: datetime,
) -> list[ScheduleState]:
    now: datetime = connection.execute(select(func.now())).scalar_one()
    lost = and_(ScheduleRun.status == RunStatus.running, ScheduleRun.heartbeat_at < now - lease)
    failed = or_(ScheduleRun.status == RunStatus.failed, lost)
    states = []
    for s in schedules:
        mine = ScheduleRun.schedule == s.name
        newest = select(ScheduleRun.tick, ScheduleRun.status).where(mine)
        last = connection.execute(newest.order_by(ScheduleRun.tick.desc()).limit(1)).one_or_none()
        success = connection.execute(
            select(func.max(ScheduleRun.tick)).where(
                mine, ScheduleRun.status == RunStatus.succeeded
            )
        ).scalar_one()
        finished = connection.execute(
            select(failed)
            .where(mine, or_(ScheduleRun.status != RunStatus.running, lost))
            .order_by(ScheduleRun.tick.desc())
            .limit(1)
        ).scalar_one_or_none()
        recent = connection.execute(
            select(func.count()).where(mine, ScheduleRun.tick > now - RECENT, failed)
        ).scalar_one()
        states.append(
            ScheduleState(
                schedule=s,
                last_tick=last[0] if last else None,
                last_status=str(last[1]) if last else None,
                last_success=success,
                next_tick=s.when.next_after(now),
                lateness=lateness(s, success, since, now),
                last_finished_failed=bool(finished),
                recent_failures=int(recent),
            )
        )
    return states


def metrics(states: Sequence[ScheduleState]) -> list[Metric]:
    def gauge(name: str, documentation: str) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, documentation, labels=["schedule"])

    last_tick = gauge("schedule_last_tick_timestamp_seconds", "The newest claimed tick")
    last_success = gauge(
        "schedule_last_success_timestamp_seconds", "The newest tick that ran to success"
    )
    next_tick = gauge("schedule_next_tick_timestamp_seconds", "The schedule's next tick")
    late = gauge(
        "schedule_lateness_seconds",
        "How long the first tick after the last success has been due (0: on time)",
    )
    last_failed = gauge(
        "schedule_last_run_failed",
        "Whether the newest finished run failed or lost its worker (1) or succeeded (0)",
    )
    recent = gauge(
        "schedule_failures_recent",
        "Runs of the last hour's ticks that failed or lost their worker",
    )
    for state in states:
        labels = [state.schedule.name]
        if state.last_tick is not None:
            last_tick.add_metric(labels, state.last_tick.timestamp())
        if state.last_success is not None:
            last_success.add_metric(labels, state.last_success.timestamp())
        next_tick.add_metric(labels, state.next_tick.timestamp())
        late.add_metric(labels, state.lateness)
        last_failed.add_metric(labels, float(state.last_finished_failed))
        recent.add_metric(labels, float(state.recent_failures))
    return [last_tick, last_success, next_tick, late, last_failed, recent]
