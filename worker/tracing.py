"""The worker's traces and error reports, per pool process (made after the fork: their export
threads would not survive it). Each job's run continues the trace of the request that sent it:
the message carries its traceparent, and a redelivery (Redis's, or a lost process's message put
back) carries the same one. A job's SQL statements are spans under its run.

The main process traces nothing: it only polls the broker, reaps and serves metrics.
"""

from __future__ import annotations

from typing import Any

from celery.signals import task_failure, worker_process_init, worker_process_shutdown
from sqlalchemy import Engine

from core.error_reports import report, start_error_reports, stop_error_reports
from core.settings import get_settings
from core.tracing import start_tracing, stop_tracing, trace_celery, trace_engine


@worker_process_init.connect
def _start(**_: object) -> None:
    settings = get_settings()
    start_error_reports(settings, "worker")
    provider = start_tracing(settings, "worker")
    if provider is not None:
        trace_celery(provider)


@worker_process_shutdown.connect
def _stop(**_: object) -> None:
    stop_tracing()
    stop_error_reports()


@task_failure.connect
def _report(task_id: str | None = None, exception: BaseException | None = None, **_: Any) -> None:
    if exception is not None:
        report(exception, task_id=task_id)


def traced(engine: Engine) -> Engine:
    """The task sessions' engine, its statements traced while tracing is on."""
    provider = start_tracing(get_settings(), "worker")
    if provider is not None:
        trace_engine(engine, provider)
    return engine
