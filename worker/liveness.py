"""Liveness for the worker container without a broker round trip.

The heartbeat bootstep (worker/heartbeat.py) touches a file on the worker's own timer; the image's
HEALTHCHECK (`python -m worker.liveness`) fails when the file is missing or stale, i.e. before the
worker is ready or when its main loop is stuck. Standard library only: the check runs every few
seconds, and importing Celery for it cost about 0.19 s of CPU each time.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

HEARTBEAT_FILE = Path("/tmp/celery-worker.heartbeat")  # noqa: S108 - container-private tmpfs
INTERVAL_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


def is_alive(now: float | None = None) -> bool:
    try:
        age = (now or time.time()) - HEARTBEAT_FILE.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < STALE_AFTER_SECONDS


if __name__ == "__main__":
    sys.exit(0 if is_alive() else 1)
