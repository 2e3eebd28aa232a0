"""The worker's metrics and the job exporter, without a broker or a database."""

from __future__ import annotations

import time
from types import SimpleNamespace

from prometheus_client import REGISTRY

from core.settings import Settings
from worker import metrics
from worker.queue_exporter import SOURCE_DEADLINE_SECONDS, QueueCollector, queue_keys


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_task_run_is_counted_by_state_and_timed():
    task = SimpleNamespace(name="worker.tasks.run_job")
    before = _sample("celery_tasks_finished_total", task=task.name, state="SUCCESS")
    runs = _sample("celery_task_runtime_seconds_count", task=task.name)
    metrics._on_received(request=SimpleNamespace(name=task.name))
    metrics._on_prerun(task_id="t1")
    metrics._on_postrun(task_id="t1", sender=task, state="SUCCESS")
    assert _sample("celery_tasks_finished_total", task=task.name, state="SUCCESS") == before + 1
    assert _sample("celery_task_runtime_seconds_count", task=task.name) == runs + 1
    assert "t1" not in metrics._started


def test_the_queue_is_every_priority_list_of_celery():
    assert queue_keys() == ["celery", "celery\x06\x163", "celery\x06\x166", "celery\x06\x169"]


def test_sources_that_do_not_answer_are_reported_and_the_volumes_still_are(tmp_path):
    (tmp_path / "pgdata").mkdir()
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", postgres_host="127.0.0.1", postgres_port=1
    )
    collector = QueueCollector(settings, tmp_path)
    started = time.monotonic()
    families = {family.name: family for family in collector.collect()}
    assert time.monotonic() - started < 2 * SOURCE_DEADLINE_SECONDS + 1
    up = {s.labels["source"]: s.value for s in families["job_exporter_source_up"].samples}
    assert up == {"redis": 0, "postgres": 0}
    assert "celery_queue_length" not in families
    assert "jobs_oldest_queued_age_seconds" not in families
    free = families["volume_free_bytes"].samples
    assert [s.labels["volume"] for s in free] == ["pgdata"]
    assert free[0].value > 0
