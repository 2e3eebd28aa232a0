"""The worker's liveness probe: a bootstep touches worker/healthcheck.py's file on the worker's own
timer, so the file goes stale when the worker's main loop is stuck."""

from __future__ import annotations

from celery import bootsteps

from worker.bootstep_types import Repeating, Worker
from worker.healthcheck import LIVENESS_FILE, TOUCH_INTERVAL_SECONDS


class LivenessProbe(bootsteps.StartStopStep):
    requires = ("celery.worker.components:Timer",)

    def __init__(self, parent: object, **kwargs: object) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Repeating | None = None

    def start(self, worker: Worker) -> None:
        LIVENESS_FILE.touch()
        self.tref = worker.timer.call_repeatedly(TOUCH_INTERVAL_SECONDS, LIVENESS_FILE.touch)

    def stop(self, worker: Worker) -> None:
        if self.tref is not None:
            self.tref.cancel()
        LIVENESS_FILE.unlink(missing_ok=True)
