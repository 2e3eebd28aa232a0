"""The worker's Prometheus metrics: tasks received, finished (by state), their runtimes, and job
outcomes, served on WORKER_METRICS_PORT by the worker's main process.

Celery's prefork pool runs tasks in child processes, and the signals that say a task finished
(task_prerun, task_postrun) fire there; task_received fires in the main process. A child's
registry dies with it (every CELERY max-tasks-per-child tasks, or a crash), and the main process
cannot see into it. So, as the api does under gunicorn (api/metrics.py), every process writes its
samples to files in PROMETHEUS_MULTIPROC_DIR (set in the worker image) and the main process's
endpoint merges them: counts survive a recycled child and are summed over all of them. The
directory is emptied when the main process starts (worker_init), before any child exists.

Queue depth and the oldest queued job's age are not here: a stopped worker must not take them
with it. worker/queue_exporter.py, a service of its own, exports them.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps
from celery.signals import task_postrun, task_prerun, task_received, worker_init
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.exposition import start_http_server

from core.metrics_dir import reset_metrics_directory
from core.models import JobState
from core.settings import get_settings
from worker.bootstep_types import Worker

log = logging.getLogger(__name__)

# Every metric has a label, so no sample file is created at import (before worker_init empties
# the directory): files appear when a process first counts something.
TASKS_RECEIVED = Counter(
    "celery_tasks_received_total", "Task messages the worker took from the queue", ["task"]
)
TASKS_FINISHED = Counter(
    "celery_tasks_finished_total",
    "Task runs that ended, by Celery state (SUCCESS, FAILURE, RETRY, ...)",
    ["task", "state"],
)
TASK_RUNTIME = Histogram(
    "celery_task_runtime_seconds",
    "Time a task ran in a pool process",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
# What users see: a job can end failed while its task ends SUCCESS (the soft time limit is
# caught and recorded on the row), so job outcomes are counted where the row is written.
JOBS_FINISHED = Counter(
    "jobs_finished_total", "Jobs that reached a final state, by that state", ["state"]
)

# task_id -> monotonic start time, in the child process running the task.
_started: dict[str, float] = {}


def _task_name(sender: Any) -> str:
    return str(getattr(sender, "name", None) or "unknown")


@task_received.connect
def _on_received(request: Any = None, **_: object) -> None:
    TASKS_RECEIVED.labels(task=str(getattr(request, "name", None) or "unknown")).inc()


@task_prerun.connect
def _on_prerun(task_id: str | None = None, **_: object) -> None:
    if task_id is not None:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _on_postrun(
    task_id: str | None = None, sender: Any = None, state: str | None = None, **_: object
) -> None:
    name = _task_name(sender)
    TASKS_FINISHED.labels(task=name, state=state or "UNKNOWN").inc()
    started = _started.pop(task_id, None) if task_id is not None else None
    if started is not None:
        TASK_RUNTIME.labels(task=name).observe(time.monotonic() - started)


@worker_init.connect
def _on_worker_init(**_: object) -> None:
    """The main process, before the pool forks."""
    reset_metrics_directory(get_settings().prometheus_multiproc_dir)
    # Both outcomes exist from the start at 0: a ratio of failures has a value before the first
    # failure, and an increase from nothing is not lost.
    for state in (JobState.succeeded, JobState.failed):
        JOBS_FINISHED.labels(state=state.value)


def registry() -> CollectorRegistry:
    """What the endpoint serves: every process's samples merged, or, without a multiprocess
    directory (tests), this process's own."""
    directory = get_settings().prometheus_multiproc_dir
    if not directory:
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=directory)
    return merged


class MetricsServer(bootsteps.StartStopStep):
    """The endpoint, in a thread of the main process: it lives as long as the worker does, and
    a child's death does not take it down. Port 0 turns it off."""

    def start(self, worker: Worker) -> None:
        port = get_settings().worker_metrics_port
        if port:
            start_http_server(port, registry=registry())
            log.info("worker metrics served", extra={"port": port})
