"""The Celery worker's app: core's Celery configuration, plus the task code (the jobs' and the
scheduled tasks'), the liveness probe, the reaper of jobs and schedule claims whose worker died,
the metrics endpoint (worker/metrics.py), and JSON logs.

`celery --app=worker.app worker` loads this; the api never does (it sends jobs by their task's
name, core/task_names.py).
"""

from __future__ import annotations

from celery.signals import setup_logging

from core.celery_config import make_celery
from core.logs import configure_logging
from core.settings import get_settings
from worker import tracing as _tracing  # noqa: F401 - its hooks run in each pool process
from worker.liveness_probe import LivenessProbe
from worker.metrics import MetricsServer
from worker.reaper import JobReaper
from worker.schedules import load

settings = get_settings()
settings.require_secrets("postgres_password", "redis_password")
# Refused at start, naming the schedule: the reaper resends abandoned claims by these.
schedules = load(settings)

celery_app = make_celery(settings, include=["worker.tasks", "worker.scheduled_tasks"])
celery_app.steps["worker"].add(LivenessProbe)
celery_app.steps["worker"].add(JobReaper)
celery_app.steps["worker"].add(MetricsServer)


@setup_logging.connect
def _json_logs(**_: object) -> None:
    """Connecting here stops Celery from installing its own text logging."""
    configure_logging(settings.log_level)
