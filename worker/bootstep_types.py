"""What the worker's bootsteps (liveness_probe.py, reaper.py, metrics.py) use of the `worker` that
Celery passes to their start and stop: a celery.worker.WorkController. celery-types annotates its
timer and pool as the bootsteps that make them, so that class cannot be used here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from celery import Celery


class Repeating(Protocol):
    def cancel(self) -> None: ...


class Timer(Protocol):
    """kombu's event-loop Timer, or celery's timer2 thread: made by the Timer bootstep."""

    def call_repeatedly(self, secs: float, fun: Callable[[], object]) -> Repeating: ...


class Pool(Protocol):
    @property
    def info(self) -> Mapping[str, Any]: ...


class Worker(Protocol):
    @property
    def app(self) -> Celery: ...

    @property
    def hostname(self) -> str: ...

    @property
    def timer(self) -> Timer: ...

    @property
    def pool(self) -> Pool: ...
