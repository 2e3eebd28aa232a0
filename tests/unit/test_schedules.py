"""worker/schedules.py's rules and validation, and the scheduler's sending (worker/scheduler.py),
with no broker: the app's send_task is replaced by a recorder, time by a fixed clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from core import task_names
from core.settings import Settings
from worker import scheduler as scheduler_module
from worker.schedule_metrics import ScheduleState, lateness
from worker.schedules import (
    Cron,
    Every,
    Schedule,
    ScheduleError,
    declared,
    load,
    parse_tick,
    tick_text,
    validate,
)
from worker.schedules_report import lines

TASK = task_names.SNAPSHOT_JOB_COUNTS_TASK


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_an_interval_ticks_at_multiples_since_the_epoch_whoever_computes_it():
    every = Every(300)
    assert every.latest_at(at("2026-12-06T10:07:59+00:00")) == at("2026-12-06T10:05:00+00:00")
    assert every.next_after(at("2026-12-06T10:07:59+00:00")) == at("2026-12-06T10:10:00+00:00")
    # A tick itself is its own latest, and the next is one interval on.
    assert every.latest_at(at("2026-12-06T10:05:00+00:00")) == at("2026-12-06T10:05:00+00:00")
    assert every.next_after(at("2026-12-06T10:05:00+00:00")) == at("2026-12-06T10:10:00+00:00")
    # Two schedulers started at different moments compute the same ticks.
    one, two = at("2026-12-06T10:00:01+00:00"), at("2026-12-06T10:07:42.5+00:00")
    ticks_one, ticks_two = [every.next_after(one)], [every.next_after(two)]
    for _ in range(3):
        ticks_one.append(every.next_after(ticks_one[-1]))
        ticks_two.append(every.next_after(ticks_two[-1]))
    assert ticks_one[1:] == ticks_two[:3]


def test_cron_in_utc():
    rule = Cron("17 3 * * *")
    assert rule.next_after(at("2026-12-06T03:17:00+00:00")) == at("2026-12-07T03:17:00+00:00")
    assert rule.latest_at(at("2026-12-06T03:16:59+00:00")) == at("2026-12-05T03:17:00+00:00")
    assert rule.latest_at(at("2026-12-06T03:17:00+00:00")) == at("2026-12-06T03:17:00+00:00")
    weekdays = Cron("*/30 9 * * mon-fri")
    # Saturday 6 December: the next is Monday 09:00.
    assert weekdays.next_after(at("2026-12-05T12:00:00+00:00")) == at("2026-12-07T09:00:00+00:00")
    assert weekdays.next_after(at("2026-12-07T09:00:00+00:00")) == at("2026-12-07T09:30:00+00:00")


def test_cron_both_day_fields_given_means_either_as_in_cron():
    # The 1st of the month or a Monday: Tuesday 1 December, then Monday 7 December.
    rule = Cron("0 0 1 * mon")
    assert rule.next_after(at("2026-11-30T12:00:00+00:00")) == at("2026-12-01T00:00:00+00:00")
    assert rule.next_after(at("2026-12-01T00:00:00+00:00")) == at("2026-12-07T00:00:00+00:00")


def test_cron_across_daylight_saving_time():
    paris = ZoneInfo("Europe/Paris")
    rule = Cron("30 2 * * *", "Europe/Paris")
    # 29 March 2026: 02:30 does not exist in Paris (02:00 -> 03:00); no tick that day.
    after = rule.next_after(at("2026-03-28T12:00:00+00:00"))
    assert after.astimezone(paris).isoformat() == "2026-03-30T02:30:00+02:00"
    # 25 October 2026: 02:30 occurs twice; it ticks once, at the first (summer time).
    first = rule.next_after(at("2026-10-24T12:00:00+00:00"))
    assert first.astimezone(paris).isoformat() == "2026-10-25T02:30:00+02:00"
    assert rule.next_after(first).astimezone(paris).isoformat() == "2026-10-26T02:30:00+01:00"
    # The local hour is kept across the change: 06:00 in Paris is 05:00 then 04:00 UTC.
    six = Cron("0 6 * * *", "Europe/Paris")
    assert six.next_after(at("2026-10-24T12:00:00+00:00")) == at("2026-10-25T05:00:00+00:00")
    assert six.next_after(at("2026-10-25T12:00:00+00:00")) == at("2026-10-26T05:00:00+00:00")
    assert six.next_after(at("2026-10-26T05:00:00+00:00")) == at("2026-10-27T05:00:00+00:00")


def test_a_rare_cron_is_found_backwards_and_forwards():
    leap = Cron("0 9 29 2 *")
    assert leap.latest_at(at("2026-12-06T00:00:00+00:00")) == at("2024-02-29T09:00:00+00:00")
    assert leap.next_after(at("2026-12-06T00:00:00+00:00")) == at("2028-02-29T09:00:00+00:00")


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        (Schedule("a", TASK, Every(0)), "schedule 'a': an interval is a whole number"),
        (Schedule("a", TASK, Every(0.5)), "schedule 'a': an interval is a whole number"),
        (Schedule("a", TASK, Cron("61 * * * *")), "schedule 'a': bad cron expression '61 * * * *'"),
        (Schedule("a", TASK, Cron("0 0 * *")), "schedule 'a': bad cron expression '0 0 * *': 4"),
        (Schedule("a", TASK, Cron("0 0 30 2 *")), "schedule 'a': bad cron expression"),
        (
            Schedule("a", TASK, Cron("* * * * *", "Mars/Olympus")),
            "unknown time zone 'Mars/Olympus'",
        ),
        (Schedule("a", "worker.tasks.nothing", Every(5)), "schedule 'a': unknown task"),
        (Schedule("a", TASK, Every(5), missed="later"), "schedule 'a': missed must be"),
        (Schedule("a", TASK, Every(5), args=(object(),)), "schedule 'a': arguments must be JSON"),
        (Schedule("A b", TASK, Every(5)), "schedule 'A b': a name is lowercase"),
    ],
)
def test_a_bad_declaration_is_refused_naming_the_schedule(schedule, message):
    with pytest.raises(ScheduleError, match="schedules refused") as refused:
        validate([schedule])
    assert message in str(refused.value)


def test_a_name_used_twice_is_refused():
    with pytest.raises(ScheduleError, match="schedule 'a': duplicate name"):
        validate([Schedule("a", TASK, Every(5)), Schedule("a", TASK, Every(10))])


def test_the_apps_schedules_are_valid_and_their_intervals_are_settings():
    schedules = load(Settings(purge_interval_seconds=5, job_snapshot_interval_seconds=7))
    assert {s.name: s.when for s in schedules} == {
        "purge-finished-jobs": Every(5),
        "snapshot-job-counts": Every(7),
        "purge-schedule-runs": Cron("17 3 * * *", "UTC"),
    }
    assert {s.name: s.missed for s in schedules}["snapshot-job-counts"] == "skip"


def test_every_scheduled_task_is_registered_by_the_worker():
    from worker.app import celery_app
    from worker.scheduled_tasks import purge_finished_jobs  # noqa: F401 - registers the tasks

    for schedule in declared(Settings()):
        assert schedule.task in celery_app.tasks, schedule.name


def test_a_tick_travels_as_iso_utc():
    tick = at("2026-12-06T10:05:00+01:00")
    assert tick_text(tick) == "2026-12-06T09:05:00+00:00"
    assert parse_tick(tick_text(tick)) == tick
    with pytest.raises(ValueError, match="no time zone"):
        parse_tick("2026-12-06T10:05:00")


class Clock:
    def __init__(self, start: str) -> None:
        self.now = at(start)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def beat(monkeypatch, tmp_path):
    """A ClaimingScheduler on the real Celery app, its sends recorded, on a clock the test
    moves; a run-late and a skip schedule every 5 s."""
    sent: list[tuple[str, str]] = []
    failing: list[bool] = [False]

    def send_task(name: str, args=None, kwargs=None, **_: object) -> None:
        if failing[0]:
            raise ConnectionError("broker away")
        sent.append((kwargs["schedule"], kwargs["tick"]))

    clock = Clock("2026-12-06T10:00:07+00:00")
    schedules = (
        Schedule("late", TASK, Every(5)),
        Schedule("skip", TASK, Every(5), missed="skip"),
    )
    monkeypatch.setattr(scheduler_module, "_now", clock)
    monkeypatch.setattr(scheduler_module, "load", lambda _: schedules)
    monkeypatch.setattr(scheduler_module, "SCHEDULER_LIVENESS_FILE", tmp_path / "liveness")
    monkeypatch.setattr(scheduler_module.celery_app, "send_task", send_task)
    scheduler = scheduler_module.ClaimingScheduler(scheduler_module.celery_app)
    return scheduler, clock, sent, failing, tmp_path / "liveness"


def test_at_start_run_late_sends_its_latest_tick_and_skip_waits(beat):
    scheduler, clock, sent, _, liveness = beat
    wait = scheduler.tick()
    assert sent == [("late", "2026-12-06T10:00:05+00:00")]
    assert liveness.exists()
    assert 0 < wait <= 3
    clock.now = at("2026-12-06T10:00:10.01+00:00")
    scheduler.tick()
    assert sent[1:] == [
        ("late", "2026-12-06T10:00:10+00:00"),
        ("skip", "2026-12-06T10:00:10+00:00"),
    ]
    # Nothing more until the next tick.
    scheduler.tick()
    assert len(sent) == 3


def test_a_scheduler_behind_sends_only_the_latest_due_tick(beat):
    scheduler, clock, sent, _, _ = beat
    scheduler.tick()
    clock.now = at("2026-12-06T10:00:31+00:00")  # 10, 15, 20, 25, 30 due
    scheduler.tick()
    assert sent[1:] == [
        ("late", "2026-12-06T10:00:30+00:00"),
        ("skip", "2026-12-06T10:00:30+00:00"),
    ]


def test_a_scheduler_a_few_ticks_late_still_sends_each(beat):
    scheduler, clock, sent, _, _ = beat
    scheduler.tick()
    clock.now = at("2026-12-06T10:00:21+00:00")  # 10, 15, 20 due: late, not stopped
    scheduler.tick()
    assert sent[1:] == [
        ("late", "2026-12-06T10:00:10+00:00"),
        ("late", "2026-12-06T10:00:15+00:00"),
        ("late", "2026-12-06T10:00:20+00:00"),
        ("skip", "2026-12-06T10:00:10+00:00"),
        ("skip", "2026-12-06T10:00:15+00:00"),
        ("skip", "2026-12-06T10:00:20+00:00"),
    ]
    clock.now = at("2026-12-06T10:00:22+00:00")
    scheduler.tick()
    assert len(sent) == 7


def test_a_failed_send_is_retried_within_a_second_and_never_doubled(beat):
    scheduler, clock, sent, failing, _ = beat
    scheduler.tick()
    clock.now = at("2026-12-06T10:00:10.5+00:00")
    failing[0] = True
    assert scheduler.tick() == pytest.approx(1.0)
    assert len(sent) == 1
    failing[0] = False
    clock.now = at("2026-12-06T10:00:12+00:00")
    scheduler.tick()
    assert sent[1:] == [
        ("late", "2026-12-06T10:00:10+00:00"),
        ("skip", "2026-12-06T10:00:10+00:00"),
    ]


def test_lateness_counts_from_the_first_tick_after_the_last_success():
    every = Schedule("s", TASK, Every(60))
    since = at("2026-12-06T09:00:00+00:00")
    success = at("2026-12-06T10:00:00+00:00")
    assert lateness(every, success, since, at("2026-12-06T10:00:59+00:00")) == 0
    assert lateness(every, success, since, at("2026-12-06T10:01:30+00:00")) == 30
    assert lateness(every, None, since, at("2026-12-06T09:03:00+00:00")) == 120


def test_make_schedules_prints_a_line_a_schedule():
    tick = at("2026-12-06T10:00:00+00:00")
    states = [
        ScheduleState(
            Schedule("purge-finished-jobs", TASK, Every(3600)),
            tick,
            "succeeded",
            tick,
            tick + timedelta(hours=1),
            0.0,
            False,
            0,
        ),
        ScheduleState(
            Schedule("purge-schedule-runs", TASK, Cron("17 3 * * *")),
            None,
            None,
            None,
            at("2026-12-07T03:17:00+00:00"),
            12.4,
            False,
            0,
        ),
    ]
    out = lines(states)
    assert out[0].split() == [
        "SCHEDULE",
        "RULE",
        "MISSED",
        "LAST",
        "RUN",
        "STATUS",
        "NEXT",
        "RUN",
        "LATE",
    ]
    assert out[1].split() == [
        "purge-finished-jobs",
        "every",
        "3600",
        "s",
        "run_late",
        "2026-12-06T10:00:00+00:00",
        "succeeded",
        "2026-12-06T11:00:00+00:00",
        "0s",
    ]
    assert "never" in out[2]
    assert out[2].endswith("12s")
