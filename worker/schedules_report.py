"""`make schedules`: each schedule, its rule, its last run (tick and status) and its next tick,
from the claims table: `python -m worker.schedules_report` in the worker container."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from core.settings import get_settings
from core.sync_engine import make_sync_engine
from worker import schedule_metrics
from worker.schedule_metrics import ScheduleState
from worker.schedules import load, tick_text


def lines(states: Sequence[ScheduleState]) -> list[str]:
    rows = [("SCHEDULE", "RULE", "MISSED", "LAST RUN", "STATUS", "NEXT RUN", "LATE")]
    for state in states:
        s = state.schedule
        rows.append(
            (
                s.name,
                s.when.describe(),
                s.missed,
                tick_text(state.last_tick) if state.last_tick else "never",
                state.last_status or "-",
                tick_text(state.next_tick),
                f"{state.lateness:.0f}s",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def main() -> int:
    settings = get_settings()
    engine = make_sync_engine(settings, "schedules-report", connect_timeout=5)
    with engine.connect() as connection:
        states = schedule_metrics.read(
            connection,
            load(settings),
            timedelta(seconds=settings.job_lease_seconds),
            datetime.now(UTC),
        )
    print("\n".join(lines(states)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
