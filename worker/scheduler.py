"""The scheduler: `celery --app=worker.scheduler beat
--scheduler=worker.scheduler:ClaimingScheduler` (compose.yaml's scheduler service).

Celery beat's loop, with a Scheduler of the kit's: it sends each due tick of worker/schedules.py
with the tick itself (ISO, UTC) in the message, and keeps nothing that matters. The database is
the state: the worker that takes a message claims its tick in schedule_runs before running it
(worker/claims.py), so a second scheduler (a deploy starts the new one beside the old; Swarm's
start-first update does the same) or a restarted one sending a tick again changes nothing. No
schedule file (beat's PersistentScheduler keeps one; this one needs none) and no database
connection: the scheduler needs Redis only.

Each due tick is sent, also by a loop up to CATCH_UP_TICKS behind (a CPU starved by a deploy's
image builds, a slow send); when the loop falls further behind (the broker away, the process
paused) only the latest due tick is sent, and the ones before it are missed. At start, a
schedule with missed="run_late" sends its latest tick at once (the worker drops it if it already
ran), one with "skip" waits for its next.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from celery import Celery
from celery.beat import Scheduler
from celery.signals import setup_logging

from core.celery_config import make_celery
from core.logs import configure_logging
from core.settings import get_settings
from worker.healthcheck import SCHEDULER_LIVENESS_FILE, TOUCH_INTERVAL_SECONDS
from worker.schedules import Schedule, load, tick_text

log = logging.getLogger(__name__)

settings = get_settings()
settings.require_secrets("redis_password")
celery_app = make_celery(settings)
# After a failed send, how soon the tick is tried again.
RETRY_SECONDS = 1.0
# A loop this many ticks late is slow, not stopped: each tick is still sent, where one tick
# late used to send only the latest.
CATCH_UP_TICKS = 3


@setup_logging.connect
def _json_logs(**_: object) -> None:
    configure_logging(settings.log_level)


def _now() -> datetime:
    return datetime.now(UTC)


class ClaimingScheduler(Scheduler):
    def __init__(self, app: Celery, *args: object, **kwargs: object) -> None:
        self.schedules: tuple[Schedule, ...] = load(get_settings())
        # Each schedule's next tick to send.
        self.due: dict[str, datetime] = {}
        super().__init__(app, *args, **kwargs)  # type: ignore[arg-type]

    def setup_schedule(self) -> None:
        now = _now()
        for s in self.schedules:
            late = s.missed == "run_late"
            self.due[s.name] = s.when.latest_at(now) if late else s.when.next_after(now)
        log.info(
            "scheduler started",
            extra={"schedules": {s.name: s.when.describe() for s in self.schedules}},
        )

    def send(self, schedule: Schedule, tick: datetime) -> bool:
        facts = {"schedule": schedule.name, "tick": tick_text(tick)}
        try:
            self.app.send_task(
                schedule.task,
                args=list(schedule.args),
                kwargs={"schedule": schedule.name, "tick": tick_text(tick)},
            )
        except Exception as exc:  # the broker away: the tick is tried again shortly
            log.warning("schedule tick not sent, retrying", extra={**facts, "error": repr(exc)})
            return False
        log.info("schedule tick sent", extra=facts)
        return True

    def tick(self, *_: object, **__: object) -> float:
        """One pass: sends what is due, returns the seconds to sleep."""
        SCHEDULER_LIVENESS_FILE.touch()
        now = _now()
        retry = False
        for s in self.schedules:
            due = self.due[s.name]
            if due > now:
                continue
            pending = [due]
            while (
                len(pending) <= CATCH_UP_TICKS and (later := s.when.next_after(pending[-1])) <= now
            ):
                pending.append(later)
            if len(pending) > CATCH_UP_TICKS:
                latest = s.when.latest_at(now)
                log.warning(
                    "schedule ticks missed: only the latest is sent",
                    extra={"schedule": s.name, "from": tick_text(due), "latest": tick_text(latest)},
                )
                pending = [latest]
            for tick in pending:
                if not self.send(s, tick):
                    self.due[s.name], retry = tick, True
                    break
                self.due[s.name] = s.when.next_after(tick)
        if retry:
            return RETRY_SECONDS
        wait = min(((d - _now()).total_seconds() for d in self.due.values()), default=60.0)
        return max(0.0, min(wait, TOUCH_INTERVAL_SECONDS))

    def sync(self) -> None:
        """Nothing to keep: the ticks come from the rules, the runs are in the database."""

    def close(self) -> None:
        super().close()
        SCHEDULER_LIVENESS_FILE.unlink(missing_ok=True)
