"""Job leases: who runs a job, whether they are still alive, and what a delivery or the reaper does.

The process running a job owns its row's lease: `worker` names it (a holder id, below) and
`heartbeat_at` is renewed every JOB_HEARTBEAT_SECONDS by a thread of that process. A running job
whose heartbeat is older than JOB_LEASE_SECONDS has lost its process; so has one whose holder is
known dead (a pool process this worker no longer has, or a previous life of this worker) once it
missed a heartbeat. Times are PostgreSQL's `now()`, so workers' clocks never matter.

The decisions are pure functions, tested in tests/unit/test_lease.py; worker/tasks.py and
worker/reaper.py apply them under row locks.
"""

from __future__ import annotations

import contextvars
import enum
import logging
import secrets
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple

from core.models import JobState
from core.settings import Settings

log = logging.getLogger(__name__)

# Drawn once in the worker's main process when this module is imported, before the pool forks:
# every pool process of one worker run shares it, and a restarted worker (same host name, maybe
# the same pids) has a new one.
BOOT_ID = secrets.token_hex(4)


class Holder(NamedTuple):
    """A job's lease holder: Celery node name, the worker run (boot id), pool process id."""

    node: str
    boot: str
    pid: int

    def __str__(self) -> str:
        return f"{self.node}/{self.boot}/{self.pid}"

    @classmethod
    def parse(cls, value: str | None) -> Holder | None:
        """None for NULL or a value this code did not write."""
        if not value:
            return None
        node, _, rest = value.rpartition("/")
        node, _, boot = node.rpartition("/")
        try:
            return cls(node, boot, int(rest)) if node and boot else None
        except ValueError:
            return None


@dataclass(frozen=True)
class LeasePolicy:
    heartbeat: timedelta
    lease: timedelta
    max_attempts: int
    # A running job with no heartbeat was started by a release without leases (during a deploy,
    # the old worker finishes its jobs): it may run up to the task time limit, never renewed.
    unrenewed: timedelta

    @classmethod
    def from_settings(cls, settings: Settings) -> LeasePolicy:
        return cls(
            heartbeat=timedelta(seconds=settings.job_heartbeat_seconds),
            lease=timedelta(seconds=settings.job_lease_seconds),
            max_attempts=settings.job_max_attempts,
            unrenewed=timedelta(seconds=settings.celery_task_time_limit),
        )

    def expiry(
        self, heartbeat_at: datetime | None, started_at: datetime | None
    ) -> tuple[datetime | None, timedelta]:
        """The time a running job was last known alive, and how long that stays valid."""
        if heartbeat_at is not None:
            return heartbeat_at, self.lease
        return started_at, self.unrenewed

    @property
    def missed_beat(self) -> timedelta:
        """A heartbeat older than this is late: its holder skipped at least one renewal."""
        return 2 * self.heartbeat


class Delivery(enum.StrEnum):
    RUN = "run"
    SKIP_FINISHED = "skip-finished"
    SKIP_LEASED = "skip-leased"
    GIVE_UP = "give-up"


def decide_delivery(
    state: str,
    last_seen: datetime | None,
    now: datetime,
    lease: timedelta,
    *,
    attempts: int = 0,
    max_attempts: int | None = None,
) -> Delivery:
    """What a delivery of a job's message does, given the job's row (locked by the caller).

    last_seen, lease: LeasePolicy.expiry's (the heartbeat and the lease, or for a job started
    without leases its start and the time limit). A message is delivered
    more than once: Redis redelivers an unacknowledged one after the visibility timeout, a lost
    pool process's message is requeued at once, and the reaper sends another. Whichever comes
    first runs the job; the others find it finished, or leased by a live process, and are dropped.
    """
    if state == JobState.running:
        # A running job without any time was never renewed by anyone: nobody holds it.
        if last_seen is not None and now - last_seen <= lease:
            return Delivery.SKIP_LEASED
    elif state != JobState.queued:
        return Delivery.SKIP_FINISHED
    if max_attempts is not None and attempts >= max_attempts:
        return Delivery.GIVE_UP
    return Delivery.RUN


class Reap(enum.StrEnum):
    REQUEUE = "requeue"
    FAIL = "fail"


def holder_is_dead(holder: Holder | None, me: Holder, live_pids: Collection[int] | None) -> bool:
    """True only when this worker knows the holder is gone: never for another node's process.

    Same node, other boot: a previous run of this worker (a container restarted after a kill keeps
    its host name). Same run: a pool process this worker no longer has (killed, out of memory).
    live_pids None: the pool cannot list its processes; nothing is known.
    """
    if holder is None or holder.node != me.node:
        return False
    if holder.boot != me.boot:
        return True
    return live_pids is not None and holder.pid not in live_pids


def reap_action(
    holder: Holder | None,
    heartbeat_at: datetime | None,
    started_at: datetime | None,
    attempts: int,
    now: datetime,
    policy: LeasePolicy,
    *,
    me: Holder,
    live_pids: Collection[int] | None,
) -> Reap | None:
    """What the reaper does with a running job: nothing while its holder may be alive.

    Abandoned: its heartbeat is older than the lease, or its holder is known dead and missed a
    heartbeat (the margin keeps a second worker wrongly sharing this node name from losing jobs);
    a job started without leases, once past the time limit. An abandoned job that already ran
    max_attempts times is failed, not queued again.
    """
    last_seen, lease = policy.expiry(heartbeat_at, started_at)
    age = None if last_seen is None else now - last_seen
    abandoned = (
        age is None
        or age > lease
        or (
            heartbeat_at is not None
            and age > policy.missed_beat
            and holder_is_dead(holder, me, live_pids)
        )
    )
    if not abandoned:
        return None
    return Reap.FAIL if attempts >= policy.max_attempts else Reap.REQUEUE


class Heartbeat:
    """A daemon thread calling beat() every `every` seconds while the job computes.

    beat() renews the lease and returns False when the lease is no longer this process's (the job
    was reaped meanwhile): the thread then stops, and the job's result will be discarded. An error
    (the database away for a moment) is logged and retried at the next beat; the lease covers
    several missed beats.
    """

    def __init__(self, beat: Callable[[], bool], every: float, *, name: str = "job-heartbeat"):
        self._beat = beat
        self._every = every
        self._stop = threading.Event()
        # In the job's context: its renewals are spans of the job's trace (core/tracing.py).
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._run,), name=name, daemon=True
        )
        self.lost = False
        self.beats = 0

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                renewed = self._beat()
            except Exception as exc:
                log.warning("job heartbeat failed, retrying", extra={"error": repr(exc)})
                continue
            self.beats += 1
            if not renewed:
                self.lost = True
                log.warning("job lease lost: the job was taken over")
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=max(self._every, 1.0))
