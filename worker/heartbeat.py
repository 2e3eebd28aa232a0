"""The worker's heartbeat: a bootstep touches worker.liveness's file on the worker's own timer, so
the file goes stale when the worker's main loop is stuck."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from celery import bootsteps

from worker.liveness import HEARTBEAT_FILE, INTERVAL_SECONDS


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
