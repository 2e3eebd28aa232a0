"""Liveness for the worker container without a broker round trip.

A bootstep touches a file on the worker's own timer; the image's HEALTHCHECK (`python -m
worker.liveness`) fails when the file is missing or stale, i.e. before the worker is ready or
when its main loop is stuck.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from celery import bootsteps

HEARTBEAT_FILE = Path("/tmp/celery-worker.heartbeat")  # noqa: S108 - container-private tmpfs
INTERVAL_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


class LivenessProbe(bootsteps.StartStopStep):
    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: object, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.tref = None

    def start(self, worker: object) -> None:
        HEARTBEAT_FILE.touch()
        self.tref = worker.timer.call_repeatedly(INTERVAL_SECONDS, HEARTBEAT_FILE.touch)  # type: ignore[attr-defined]

    def stop(self, worker: object) -> None:
        if self.tref is not None:
            self.tref.cancel()
        HEARTBEAT_FILE.unlink(missing_ok=True)


def is_alive(now: float | None = None) -> bool:
    try:
        age = (now or time.time()) - HEARTBEAT_FILE.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < STALE_AFTER_SECONDS


if __name__ == "__main__":
    sys.exit(0 if is_alive() else 1)
