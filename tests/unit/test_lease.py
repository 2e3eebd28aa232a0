"""Job leases: what a delivery does, what the reaper does, and the heartbeat thread."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from worker.lease import (
    Delivery,
    Heartbeat,
    Holder,
    LeasePolicy,
    Reap,
    decide_delivery,
    holder_is_dead,
    reap_action,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=30)
POLICY = LeasePolicy(
    heartbeat=timedelta(seconds=5), lease=LEASE, max_attempts=3, unrenewed=timedelta(seconds=300)
)
ME = Holder("celery@w1", "b00710ad", 1)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


# ---------------------------------------------------------------- a delivery of the job's message


def test_a_queued_job_runs():
    assert decide_delivery("queued", None, NOW, LEASE) is Delivery.RUN


@pytest.mark.parametrize("state", ["succeeded", "failed"])
def test_a_finished_job_is_never_run_again(state):
    """The original message, redelivered after the visibility timeout, once the reaper's rerun
    finished: skipped, whatever its lease says."""
    assert decide_delivery(state, ago(3600), NOW, LEASE) is Delivery.SKIP_FINISHED
    assert decide_delivery(state, ago(1), NOW, LEASE) is Delivery.SKIP_FINISHED
    assert decide_delivery(state, None, NOW, LEASE) is Delivery.SKIP_FINISHED


@pytest.mark.parametrize("age", [0, 1, 29.9, 30])
def test_a_job_running_under_a_live_lease_is_not_run_twice(age):
    assert decide_delivery("running", ago(age), NOW, LEASE) is Delivery.SKIP_LEASED


@pytest.mark.parametrize("age", [30.001, 31, 3600])
def test_a_job_whose_lease_expired_runs_again(age):
    assert decide_delivery("running", ago(age), NOW, LEASE) is Delivery.RUN


def test_a_running_job_without_any_time_runs_again():
    assert decide_delivery("running", None, NOW, LEASE) is Delivery.RUN


def test_a_job_whose_worker_died_at_every_attempt_is_given_up():
    assert (
        decide_delivery("running", ago(60), NOW, LEASE, attempts=2, max_attempts=3) is Delivery.RUN
    )
    assert (
        decide_delivery("running", ago(60), NOW, LEASE, attempts=3, max_attempts=3)
        is Delivery.GIVE_UP
    )
    # Not while it may still be running, nor once finished.
    assert (
        decide_delivery("running", ago(1), NOW, LEASE, attempts=3, max_attempts=3)
        is Delivery.SKIP_LEASED
    )
    assert (
        decide_delivery("succeeded", None, NOW, LEASE, attempts=3, max_attempts=3)
        is Delivery.SKIP_FINISHED
    )


# ---------------------------------------------------------------- lease holders


def test_holder_round_trips_through_its_column_value():
    holder = Holder("celery@3f2a9c/b", "0123abcd", 42)
    assert Holder.parse(str(holder)) == holder


@pytest.mark.parametrize("value", [None, "", "celery@w1", "celery@w1/boot/notapid", "/b/1"])
def test_holder_values_this_code_did_not_write_parse_to_none(value):
    assert Holder.parse(value) is None


def test_only_this_workers_own_dead_holders_are_known_dead():
    pids = {1, 7, 8}
    assert not holder_is_dead(None, ME, pids)
    assert not holder_is_dead(Holder("celery@other", "b00710ad", 99), ME, pids)
    assert not holder_is_dead(Holder("celery@w1", ME.boot, 7), ME, pids)
    # A pool process this worker no longer has.
    assert holder_is_dead(Holder("celery@w1", ME.boot, 9), ME, pids)
    # A previous run of this worker (a restarted container: same node name, maybe the same pid).
    assert holder_is_dead(Holder("celery@w1", "0ldb0071", 7), ME, pids)
    # The pool does not list its processes: unknown, so alive.
    assert not holder_is_dead(Holder("celery@w1", ME.boot, 9), ME, None)


# ---------------------------------------------------------------- the reaper


def reap(holder, age, attempts=1, live_pids=frozenset({1, 7, 8}), started=None):
    heartbeat_at = None if age is None else ago(age)
    started_at = ago(started) if started is not None else heartbeat_at
    return reap_action(
        holder, heartbeat_at, started_at, attempts, NOW, POLICY, me=ME, live_pids=live_pids
    )


OTHER_NODE = Holder("celery@w2", "feedf00d", 7)
PREVIOUS_LIFE = Holder("celery@w1", "0ldb0071", 7)
LIVE_CHILD = Holder("celery@w1", ME.boot, 7)


@pytest.mark.parametrize("holder", [OTHER_NODE, PREVIOUS_LIFE, LIVE_CHILD, None])
def test_a_fresh_heartbeat_is_never_reaped(holder):
    assert reap(holder, age=0) is None
    assert reap(holder, age=9.9) is None


@pytest.mark.parametrize("holder", [OTHER_NODE, LIVE_CHILD, None])
def test_a_late_heartbeat_of_a_possibly_live_holder_waits_for_the_lease(holder):
    assert reap(holder, age=11) is None
    assert reap(holder, age=30) is None
    assert reap(holder, age=30.5) is Reap.REQUEUE


def test_a_known_dead_holder_is_reaped_once_it_missed_a_heartbeat():
    """A restarted worker takes back its previous life's jobs, and a killed pool process's job is
    taken back, without waiting for the whole lease."""
    assert reap(PREVIOUS_LIFE, age=10.5) is Reap.REQUEUE
    assert reap(Holder("celery@w1", ME.boot, 9), age=10.5) is Reap.REQUEUE


def test_a_running_job_with_no_time_at_all_is_reaped():
    assert reap(None, age=None) is Reap.REQUEUE


def test_a_job_started_without_leases_is_reaped_only_past_the_time_limit():
    """During a deploy the previous release's worker finishes its jobs, never renewing them."""
    assert reap(None, age=None, started=31) is None
    assert reap(None, age=None, started=299) is None
    assert reap(None, age=None, started=301) is Reap.REQUEUE
    # Even if the column names a dead holder: no heartbeat, no fast path.
    assert reap(PREVIOUS_LIFE, age=None, started=31) is None


def test_a_delivery_of_a_job_started_without_leases_waits_for_the_time_limit():
    for started, expected in ((31, Delivery.SKIP_LEASED), (301, Delivery.RUN)):
        last_seen, lease = POLICY.expiry(None, ago(started))
        assert decide_delivery("running", last_seen, NOW, lease) is expected
    assert POLICY.expiry(ago(1), ago(100)) == (ago(1), LEASE)


def test_an_abandoned_job_that_used_its_attempts_fails_instead():
    assert reap(OTHER_NODE, age=31, attempts=2) is Reap.REQUEUE
    assert reap(OTHER_NODE, age=31, attempts=3) is Reap.FAIL
    assert reap(OTHER_NODE, age=1, attempts=3) is None


def test_the_policy_comes_from_the_settings():
    from core.settings import Settings

    policy = LeasePolicy.from_settings(
        Settings(
            job_heartbeat_seconds=2,
            job_lease_seconds=7,
            job_max_attempts=5,
            celery_task_time_limit=60,
            celery_visibility_timeout=120,
        )
    )
    assert policy == LeasePolicy(
        timedelta(seconds=2), timedelta(seconds=7), 5, unrenewed=timedelta(seconds=60)
    )
    assert policy.missed_beat == timedelta(seconds=4)


# ---------------------------------------------------------------- the heartbeat thread


def test_heartbeat_renews_while_the_job_runs_and_stops_after():
    beats = []
    with Heartbeat(lambda: beats.append(time.monotonic()) or True, every=0.02) as hb:
        time.sleep(0.2)
    stopped_at = len(beats)
    time.sleep(0.1)
    assert stopped_at >= 3
    assert len(beats) == stopped_at, "beats after the job ended"
    assert not hb.lost


def test_heartbeat_renews_while_the_main_thread_computes():
    """The job is CPU-bound pure Python: the interpreter still switches to the heartbeat."""
    import hashlib

    beats = []
    with Heartbeat(lambda: beats.append(1) or True, every=0.02):
        deadline = time.monotonic() + 0.3
        digest = b"x"
        while time.monotonic() < deadline:
            digest = hashlib.sha256(digest).digest()
    assert len(beats) >= 5


def test_heartbeat_stops_when_the_lease_is_lost():
    calls = []

    def beat():
        calls.append(1)
        return len(calls) < 2

    with Heartbeat(beat, every=0.01) as hb:
        time.sleep(0.2)
    assert hb.lost
    assert len(calls) == 2


def test_heartbeat_survives_a_failing_beat():
    calls = []
    done = threading.Event()

    def beat():
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("database away")
        done.set()
        return True

    with Heartbeat(beat, every=0.01) as hb:
        assert done.wait(2)
    assert not hb.lost
    assert len(calls) >= 2
