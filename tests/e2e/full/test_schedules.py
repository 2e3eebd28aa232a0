"""Once per tick under faults: the test stack ticks every 5 s (tests/compose.test.yaml), on a
run-late schedule (purge-finished-jobs) and a skip one (snapshot-job-counts, one row a run).
Each fault is counted from the claims table and from the snapshot rows (tests/support/
schedules.py): no tick runs twice, and a tick is missing only where its schedule's missed-tick
policy allows it (docs/schedules.md). About two and a half minutes in all.
"""

from __future__ import annotations

import time

from tests.support.schedules import SKIP, assert_both_schedules_once, settle
from tests.support.stack import run


def _sent_ticks(stack, container: str) -> set[str]:
    logs = run(["docker", "logs", container], check=False)
    return {
        line.split('"tick": "')[1].split('"')[0]
        for line in (logs.stdout + logs.stderr).splitlines()
        if '"schedule tick sent"' in line and f'"schedule": "{SKIP}"' in line
    }


def test_two_schedulers_for_a_minute_run_each_tick_once(stack):
    """As during a deploy: a second scheduler beside the first, both sending every tick."""
    stack.wait_healthy("scheduler")
    start = time.time()
    stack.compose(
        "up", "-d", "--no-deps", "--no-recreate", "--scale", "scheduler=2", "--wait", "scheduler"
    )
    try:
        time.sleep(60)
        until = time.time()
        first, second = stack.container_ids("scheduler")
        both = _sent_ticks(stack, first) & _sent_ticks(stack, second)
    finally:
        stack.compose("up", "-d", "--no-deps", "--scale", "scheduler=1", "--wait", "scheduler")
    # Both really sent the ticks: the claims, not a quiet second scheduler, kept them single.
    assert len(both) >= 10, both
    settle(stack.psql, until)
    _, skip = assert_both_schedules_once(stack.psql, start, until)
    assert len(skip.claims) >= 11
    print(f"\n[schedules] two schedulers: {len(skip.claims)} ticks, each once")


def test_a_killed_scheduler_restarted_loses_only_what_the_policy_allows(stack):
    [victim] = stack.wait_healthy("scheduler")
    start = time.time()
    time.sleep(7)
    run(["docker", "kill", "--signal", "KILL", victim])
    killed = time.time()
    # Longer than a tick: at least one falls while no scheduler runs.
    time.sleep(8)
    stack.compose("start", "scheduler")
    stack.wait_healthy("scheduler")
    restarted = time.time()
    time.sleep(12)
    until = time.time()
    settle(stack.psql, until)

    def in_gap(tick: int) -> bool:
        return killed - 1 <= tick <= restarted

    late, skip = assert_both_schedules_once(stack.psql, start, until, may_miss=in_gap)
    gap = [t for t in late.expected if in_gap(t)]
    assert gap, "no tick fell while the scheduler was down"
    # run_late: the latest tick due at the restart ran, late; skip: the gap's ticks did not.
    assert any(t in late.claims for t in gap), (gap, sorted(late.claims))
    assert any(t in skip.missing for t in gap), (gap, sorted(skip.claims))
    print(
        f"\n[schedules] killed scheduler: gap {gap}, run late {sorted(set(gap) & set(late.claims))}"
    )


def test_a_redis_restart_runs_each_tick_once(stack):
    stack.wait_healthy("scheduler")
    start = time.time()
    time.sleep(6)
    stopped = time.time()
    stack.compose("stop", "redis")
    time.sleep(6)
    stack.compose("start", "redis")
    stack.wait_healthy("redis", timeout=60)
    back = time.time()
    time.sleep(15)
    until = time.time()
    settle(stack.psql, until)

    def broker_away(tick: int) -> bool:
        return stopped - 1 <= tick <= back

    late, skip = assert_both_schedules_once(stack.psql, start, until, may_miss=broker_away)
    # Ticks after the broker came back all ran (the assertion above), and before it stopped too.
    assert [t for t in skip.expected if t < stopped - 1] == [
        t for t in sorted(skip.claims) if t < stopped - 1
    ]
    print(f"\n[schedules] Redis restart: missed {late.missing} (run late), {skip.missing} (skip)")
