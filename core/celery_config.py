"""The Celery app as both processes see it: its configuration (the task names are in
core/task_names.py).

The api builds a client from this (on its first job, from the settings given to create_app) to
send jobs; the worker builds the same app and registers the task code. Neither imports the other.

Configured so that no job is lost when a worker dies:
- acks_late + reject_on_worker_lost: a message is acknowledged only after its task finishes; if the
  process running it is killed, the message goes back to the queue.
- visibility_timeout > time limit: if the whole worker (container) is killed, Redis hands the
  unacknowledged message to a worker again after the visibility timeout, and never earlier than a
  task may legitimately run.
- prefetch 1: a long job does not hold a queue of others hostage in one process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.settings import Settings

if TYPE_CHECKING:
    from celery import Celery


def make_celery(settings: Settings, *, include: Sequence[str] = ()) -> Celery:
    # Imported here: the api loads Celery only when it first sends a job (api/job_queue.py).
    from celery import Celery

    app = Celery("worker", broker=settings.broker_url, include=list(include))
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_time_limit=settings.celery_task_time_limit,
        task_soft_time_limit=settings.celery_soft_time_limit,
        worker_prefetch_multiplier=1,
        worker_concurrency=settings.celery_processes,
        worker_max_tasks_per_child=1000,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        broker_transport_options={"visibility_timeout": settings.celery_redelivery_timeout},
        broker_connection_retry_on_startup=True,
        # The api waits at most ~1 s for a broker that is down, then answers 503.
        broker_connection_timeout=2,
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.25,
            "interval_max": 0.5,
        },
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
    )
    return app
