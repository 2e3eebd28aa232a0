"""The api's side of the job queue: sends a job id to the worker through Redis.

The Celery client, and Celery and kombu themselves (about 0.4 s of imports), are loaded on the
first job sent, not at start-up: a process that never queues a job (a health check, a Lambda
invocation that reads items) starts without them, which is most of a cold start's difference.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from core.celery_config import make_celery
from core.settings import Settings
from core.task_names import RUN_JOB_TASK

if TYPE_CHECKING:
    from celery import Celery


class JobQueueUnavailable(Exception):
    """The broker could not take the job: nothing was queued."""


class JobQueue:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Celery | None = None
        self._lock = threading.Lock()  # sends run in the thread pool

    @property
    def client(self) -> Celery:
        with self._lock:
            if self._client is None:
                self._client = make_celery(self._settings)
            return self._client

    def send(self, job_id: str, traceparent: str | None = None) -> None:
        """Blocking (the broker's socket): call it from a thread. traceparent: the job's trace,
        for a request not kept, whose suppressed Celery instrumentation would not send it."""
        from kombu.exceptions import OperationalError

        headers = {"traceparent": traceparent} if traceparent else None
        try:
            self.client.send_task(RUN_JOB_TASK, args=[job_id], headers=headers)
        except (OperationalError, OSError) as exc:
            raise JobQueueUnavailable(repr(exc)) from exc

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
