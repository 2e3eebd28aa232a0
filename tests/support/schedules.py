"""Counting a schedule's ticks over a window, from the claims table and from the task's own effect:
what the fault tests (tests/e2e/full/test_schedules.py, test_deploy.py, test_swarm.py) assert.

The stacks they run tick every 5 s (PURGE_INTERVAL_SECONDS, JOB_SNAPSHOT_INTERVAL_SECONDS):
purge-finished-jobs (missed ticks run late) and snapshot-job-counts (missed ticks skipped), whose
effect is one job_count_snapshots row per run.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from tests.support.stack import wait_until

INTERVAL = 5
RUN_LATE = "purge-finished-jobs"
SKIP = "snapshot-job-counts"


@dataclass(frozen=True)
class Ticks:
    """One schedule's ticks (epoch seconds) in [since, until)."""

    expected: list[int]
    claims: dict[int, tuple[str, int]]  # tick -> (status, attempts)
    effects: Counter[int] | None  # tick -> rows written (snapshot-job-counts; None: not counted)

    @property
    def missing(self) -> list[int]:
        return [t for t in self.expected if t not in self.claims]

    @property
    def not_succeeded(self) -> dict[int, tuple[str, int]]:
        return {t: c for t, c in self.claims.items() if c[0] != "succeeded"}


def ticks_between(since: float, until: float) -> list[int]:
    """The 5-s ticks t with since <= t < until, as the SQL window below selects them."""
    first = math.ceil(since / INTERVAL) * INTERVAL
    return list(range(first, math.ceil(until), INTERVAL))


def count(psql: Callable[[str], str], schedule: str, since: float, until: float) -> Ticks:
    """psql: SQL to its unaligned output (Stack.psql, tests.support.stack.psql)."""
    expected = ticks_between(since, until)
    window = f"tick >= to_timestamp({since}) AND tick < to_timestamp({until})"
    claims: dict[int, tuple[str, int]] = {}
    # The tests' own schedule names and numbers: nothing from outside reaches the SQL.
    claimed = "SELECT extract(epoch FROM tick)::bigint, status, attempts FROM schedule_runs"
    out = psql(f"{claimed} WHERE schedule = '{schedule}' AND {window}")
    for line in filter(None, out.splitlines()):
        tick, status, attempts = line.split("|")
        claims[int(tick)] = (status, int(attempts))
    effects: Counter[int] | None = None
    if schedule == SKIP:
        effects = Counter()
        written = "SELECT extract(epoch FROM tick)::bigint, count(*) FROM job_count_snapshots"
        out = psql(f"{written} WHERE {window} GROUP BY 1")
        for line in filter(None, out.splitlines()):
            tick, rows = line.split("|")
            effects[int(tick)] = int(rows)
    return Ticks(expected, claims, effects)


def assert_once_each(ticks: Ticks, may_miss: Callable[[int], bool] = lambda _: False) -> None:
    """Every claimed tick succeeded and (for the snapshot) wrote exactly one row, no row without
    a claim; a tick is missing only where may_miss allows it."""
    assert ticks.not_succeeded == {}, ticks.not_succeeded
    if ticks.effects is not None:
        twice = {t: n for t, n in ticks.effects.items() if n != 1}
        assert twice == {}, f"ticks whose effect happened more than once: {twice}"
        assert set(ticks.effects) == set(ticks.claims), (ticks.effects, ticks.claims)
    lost = [t for t in ticks.missing if not may_miss(t)]
    assert lost == [], f"ticks lost: {lost} (claimed: {sorted(ticks.claims)})"


def assert_both_schedules_once(
    psql: Callable[[str], str],
    since: float,
    until: float,
    may_miss: Callable[[int], bool] = lambda _: False,
) -> tuple[Ticks, Ticks]:
    """Both 5-s schedules over the window: (run-late's ticks, skip's ticks)."""
    late = count(psql, RUN_LATE, since, until)
    skip = count(psql, SKIP, since, until)
    assert_once_each(late, may_miss)
    assert_once_each(skip, may_miss)
    assert len(skip.expected) >= 2, "the window holds no ticks to count"
    return late, skip


def settle(psql: Callable[[str], str], until: float, within: float = 60) -> None:
    """Waits until both schedules' last tick before `until` is claimed and finished (workers
    reconnecting after a fault, or a new release's, may take some seconds)."""
    last = int(until) - int(until) % INTERVAL

    def finished() -> bool:
        return all(
            count(psql, schedule, last, last + 1).claims.get(last, ("", 0))[0] != "running"
            and last in count(psql, schedule, last, last + 1).claims
            for schedule in (RUN_LATE, SKIP)
        )

    wait_until(finished, within=within, every=1)
    time.sleep(1)
