"""Liveness for the worker container without a broker round trip.

A bootstep touches a file on the worker's own timer; the image's HEALTHCHECK (`python -m
worker.liveness`) fails when the file is missing or stale, i.e. before the worker is ready or
when its main loop is stuck.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from celery import bootsteps

HEARTBEAT_FILE = Path("/tmp/celery-worker.heartbeat")  # noqa: S108 - container-private tmpfs
INTERVAL_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


class _Repeating(Protocol):
    def cancel(self) -> None: ...


class _Timer(Protocol):
    def call_repeatedly(self, secs: float, fun: Callable[[], object]) -> _Repeating: ...


class _Worker(Protocol):
    """What this step uses of celery.worker.WorkController. Its timer, made by the Timer bootstep
    this step requires, is kombu's event-loop Timer or celery's timer2 thread; celery-types
    annotates the attribute as the bootstep class, so WorkController cannot be used here."""

    timer: _Timer


class LivenessProbe(bootsteps.StartStopStep):
    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: object, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.tref: _Repeating | None = None

    def start(self, worker: _Worker) -> None:
        HEARTBEAT_FILE.touch()
        self.tref = worker.timer.call_repeatedly(INTERVAL_SECONDS, HEARTBEAT_FILE.touch)

    def stop(self, worker: _Worker) -> None:
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
