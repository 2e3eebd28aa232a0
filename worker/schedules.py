"""The schedules: the one place where jobs on a clock are declared (declared(), below).

A schedule names a task (core/task_names.py), when it runs (Every: an interval, aligned to the
epoch; Cron: a 5-field expression in a time zone), its arguments, and what becomes of ticks the
scheduler missed (`missed`). Each tick is a fixed instant computed from the rule alone, so every
scheduler, old or new, one or two, computes the same ticks: that is what lets a worker claim a
tick once (worker/claims.py). load() validates the declarations, naming the schedule at fault; the
scheduler (worker/scheduler.py) and the worker call it at start. docs/schedules.md says how to
add one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Literal, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab

from core import task_names
from core.settings import Settings

Missed = Literal["run_late", "skip"]
MISSED_POLICIES: tuple[Missed, ...] = ("run_late", "skip")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
# Days a cron search looks ahead or back: a leap day on a given weekday recurs within 28 years.
SEARCH_DAYS = 366 * 28


class ScheduleError(ValueError):
    """Declarations refused: one line per problem, each naming its schedule."""


class Rule(Protocol):
    def next_after(self, moment: datetime) -> datetime:
        """The first tick strictly after moment (aware, UTC)."""
        ...

    def latest_at(self, moment: datetime) -> datetime:
        """The last tick at or before moment (aware, UTC)."""
        ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Every:
    """Every `seconds`, at the multiples of it since the Unix epoch (every 300: :00, :05, ...)."""

    seconds: int

    def next_after(self, moment: datetime) -> datetime:
        return self.latest_at(moment) + timedelta(seconds=self.seconds)

    def latest_at(self, moment: datetime) -> datetime:
        epoch = int(moment.timestamp() // 1)
        return datetime.fromtimestamp(epoch - epoch % self.seconds, UTC)

    def describe(self) -> str:
        return f"every {self.seconds} s"


@dataclass(frozen=True)
class CronFields:
    """The values each field of an expression allows, as Celery's crontab expanded them."""

    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month_of_year: frozenset[int]
    day_of_week: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> CronFields:
        fields = expression.split()
        if len(fields) != 5:
            raise ValueError(f"{len(fields)} fields, not 5")
        minute, hour, day_of_month, month, day_of_week = fields
        parsed = crontab(
            minute=minute,
            hour=hour,
            day_of_month=day_of_month,
            month_of_year=month,
            day_of_week=day_of_week,
        )
        # celery-types does not declare the expanded sets.
        names = ("minute", "hour", "day_of_month", "month_of_year", "day_of_week")
        return cls(*(frozenset(getattr(parsed, name)) for name in names))


@dataclass(frozen=True)
class Cron:
    """A 5-field cron expression (minute hour day-of-month month day-of-week, 0 = Sunday), read by
    Celery's crontab parser, in an IANA time zone. As in cron, when both day fields are given a
    day matching either runs. Local times that do not exist (the hour skipped when clocks go
    forward) have no tick; a local time that occurs twice (clocks go back) ticks at its first."""

    expression: str
    timezone: str = "UTC"
    _parsed: CronFields | None = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo | None = field(init=False, repr=False, compare=False)
    # Why the expression or the zone was refused; problems() reports it under the schedule's name.
    error: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parsed = zone = error = None
        try:
            parsed = CronFields.parse(self.expression)
        except Exception as exc:  # Celery's parser raises ValueError and its own ParseException
            error = f"bad cron expression {self.expression!r}: {exc}"
        try:
            zone = ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            error = error or f"unknown time zone {self.timezone!r}"
        object.__setattr__(self, "_parsed", parsed)
        object.__setattr__(self, "_zone", zone)
        object.__setattr__(self, "error", error)

    def _valid(self) -> tuple[CronFields, ZoneInfo]:
        if self._parsed is None or self._zone is None:
            raise ScheduleError(self.error)
        return self._parsed, self._zone

    def _day_matches(self, day: date) -> bool:
        c, _ = self._valid()
        if day.month not in c.month_of_year:
            return False
        in_month = day.day in c.day_of_month
        in_week = (day.weekday() + 1) % 7 in c.day_of_week
        fields = self.expression.split()
        if fields[2] != "*" and fields[4] != "*":
            return in_month or in_week
        return in_month and in_week

    def _ticks_of(self, day: date, reverse: bool) -> Iterator[datetime]:
        """The day's ticks in UTC, in order (or reversed)."""
        c, zone = self._valid()
        times = sorted((time(h, m) for h in c.hour for m in c.minute), reverse=reverse)
        for wall in times:
            naive = datetime.combine(day, wall)
            aware = naive.replace(tzinfo=zone, fold=0)
            # A wall time in the gap comes back as another time: it does not exist that day.
            if aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
                continue
            yield aware.astimezone(UTC)

    def _search(self, moment: datetime, forward: bool) -> datetime:
        start = moment.astimezone(self._valid()[1]).date()
        step = timedelta(days=1 if forward else -1)
        # One day back (or ahead) first: a local day's ticks can fall on either side of moment.
        day = start - step
        for _ in range(SEARCH_DAYS):
            if self._day_matches(day):
                for tick in self._ticks_of(day, reverse=not forward):
                    if (tick > moment) if forward else (tick <= moment):
                        return tick
            day += step
        raise ValueError(f"{self.expression!r} has no tick within {SEARCH_DAYS} days")

    def next_after(self, moment: datetime) -> datetime:
        return self._search(moment, forward=True)

    def latest_at(self, moment: datetime) -> datetime:
        return self._search(moment, forward=False)

    def describe(self) -> str:
        return f"cron {self.expression} {self.timezone}"


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    when: Rule
    args: tuple[object, ...] = ()
    # run_late: a scheduler starting after a tick it missed (it was down) sends the latest such
    # tick once, late; skip: it waits for the next. Ticks older than the latest are never sent.
    missed: Missed = "run_late"


def declared(settings: Settings) -> list[Schedule]:
    """Every schedule of the app. A new one: its task in core/task_names.py and
    worker/scheduled_tasks.py, and a line here."""
    return [
        Schedule(
            "purge-finished-jobs",
            task_names.PURGE_FINISHED_JOBS_TASK,
            Every(settings.purge_interval_seconds),
        ),
        Schedule(
            "snapshot-job-counts",
            task_names.SNAPSHOT_JOB_COUNTS_TASK,
            Every(settings.job_snapshot_interval_seconds),
            # A late count of now is no count of then: a missed tick is left out.
            missed="skip",
        ),
        Schedule(
            "purge-schedule-runs",
            task_names.PURGE_SCHEDULE_RUNS_TASK,
            Cron("17 3 * * *", "UTC"),
        ),
    ]


def known_tasks() -> frozenset[str]:
    return frozenset(
        value
        for name, value in vars(task_names).items()
        if name.endswith("_TASK") and isinstance(value, str)
    )


def problems(schedules: Sequence[Schedule]) -> list[str]:
    """What is wrong with the declarations, one line each, naming the schedule."""
    found: list[str] = []
    seen: set[str] = set()
    tasks = known_tasks()
    for s in schedules:
        label = f"schedule {s.name!r}"
        if not NAME.match(s.name):
            found.append(f"{label}: a name is lowercase letters, digits and '-', at most 100")
        if s.name in seen:
            found.append(f"{label}: duplicate name")
        seen.add(s.name)
        if s.task not in tasks:
            found.append(f"{label}: unknown task {s.task!r} (not in core/task_names.py)")
        if s.missed not in MISSED_POLICIES:
            found.append(f"{label}: missed must be one of {', '.join(MISSED_POLICIES)}")
        if isinstance(s.when, Every) and (
            not isinstance(s.when.seconds, int) or s.when.seconds < 1
        ):
            found.append(f"{label}: an interval is a whole number of seconds, at least 1")
        elif isinstance(s.when, Cron) and s.when.error:
            found.append(f"{label}: {s.when.error}")
        else:
            try:
                s.when.next_after(datetime.now(UTC))
            except ValueError as exc:
                found.append(f"{label}: {exc}")
        try:
            json.dumps(list(s.args))
        except (TypeError, ValueError):
            found.append(f"{label}: arguments must be JSON")
    return found


def validate(schedules: Sequence[Schedule]) -> tuple[Schedule, ...]:
    found = problems(schedules)
    if found:
        raise ScheduleError("schedules refused:\n" + "\n".join(f"- {p}" for p in found))
    return tuple(schedules)


def load(settings: Settings) -> tuple[Schedule, ...]:
    """The declared schedules, validated: ScheduleError names each schedule at fault."""
    return validate(declared(settings))


def by_name(schedules: Sequence[Schedule]) -> dict[str, Schedule]:
    return {s.name: s for s in schedules}


def tick_text(tick: datetime) -> str:
    """A tick as it travels in a message and a log line: ISO 8601, UTC."""
    return tick.astimezone(UTC).isoformat()


def parse_tick(text: str) -> datetime:
    tick = datetime.fromisoformat(text)
    if tick.tzinfo is None:
        raise ValueError(f"tick {text!r} has no time zone")
    return tick.astimezone(UTC)
