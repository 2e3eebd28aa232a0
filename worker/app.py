"""The Celery application, configured so that no job is lost when a worker dies.

- acks_late + reject_on_worker_lost: a message is acknowledged only after its task finishes; if the
  process running it is killed, the message goes back to the queue.
- visibility_timeout > time limit: if the whole worker (container) is killed, Redis hands the
  unacknowledged message to a worker again after the visibility timeout, and never earlier than a
  task may legitimately run.
- prefetch 1: a long job does not hold a queue of others hostage in one process.
The api imports this module too, to send tasks; it imports no task code.
"""

from __future__ import annotations

from celery import Celery
from celery.signals import setup_logging

from api.logs import configure_logging
from api.settings import get_settings
from worker.liveness import LivenessProbe

JOB_TASK = "worker.tasks.run_job"

settings = get_settings()

celery_app = Celery("worker", broker=settings.broker_url, include=["worker.tasks"])
celery_app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_time_limit=settings.celery_task_time_limit,
    task_soft_time_limit=settings.soft_time_limit,
    worker_prefetch_multiplier=1,
    worker_concurrency=settings.worker_concurrency,
    worker_max_tasks_per_child=1000,
    worker_hijack_root_logger=False,
    worker_send_task_events=False,
    broker_transport_options={"visibility_timeout": settings.visibility_timeout},
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

celery_app.steps["worker"].add(LivenessProbe)


@setup_logging.connect
def _json_logs(**_: object) -> None:
    """Connecting here stops Celery from installing its own text logging."""
    configure_logging(settings.log_level)
