"""The worker container's HEALTHCHECK, `python -m worker.healthcheck`: no broker round trip; and
the scheduler's, `python -m worker.healthcheck scheduler`.

The LivenessProbe bootstep (worker/liveness_probe.py) touches LIVENESS_FILE on the worker's own
timer, and the scheduler (worker/scheduler.py) touches SCHEDULER_LIVENESS_FILE at each pass of its
loop; this check fails when the file is missing or stale, i.e. before the process is ready or
when its main loop is stuck. Standard library only: the check runs every few seconds, and importing
Celery for it cost about 0.19 s of CPU each time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

LIVENESS_FILE = Path("/tmp/celery-worker.liveness")  # noqa: S108 - container-private tmpfs
SCHEDULER_LIVENESS_FILE = Path("/tmp/celery-beat.liveness")  # noqa: S108 - container-private
TOUCH_INTERVAL_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


def healthy(now: float | None = None, path: Path | None = None) -> bool:
    try:
        age = (now or time.time()) - (path or LIVENESS_FILE).stat().st_mtime
    except FileNotFoundError:
        return False
    return age < STALE_AFTER_SECONDS


def main(argv: list[str] | None = None) -> int:
    path = SCHEDULER_LIVENESS_FILE if argv == ["scheduler"] else None
    return 0 if healthy(path=path) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
