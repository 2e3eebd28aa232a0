"""The worker's metrics and the job exporter, without a broker or a database."""

from __future__ import annotations

import logging
import shutil
import time
from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from core.settings import Settings
from tests.support.shell import bash, shell_function
from worker import metrics
from worker.queue_exporter import (
    SOURCE_DEADLINE_SECONDS,
    BackupFileCollector,
    QueueCollector,
    queue_keys,
)

# As db/bin/kit-backup-scheduler writes it (abridged).
BACKUP_METRICS = """\
# HELP kit_backup_last_success_timestamp_seconds Newest backup of the type (0: none)
# TYPE kit_backup_last_success_timestamp_seconds gauge
kit_backup_last_success_timestamp_seconds{type="full"} 1796000000
kit_backup_last_success_timestamp_seconds{type="diff"} 0
kit_backup_last_success_timestamp_seconds{type="incr"} 0
# HELP kit_backup_expected_interval_seconds The shortest backup interval
# TYPE kit_backup_expected_interval_seconds gauge
kit_backup_expected_interval_seconds 86400
# HELP kit_backup_status Last outcome of each kind of step: 1 ok, 0 failed
# TYPE kit_backup_status gauge
kit_backup_status{kind="backup"} 1
kit_backup_status{kind="check"} 0
# HELP kit_backup_metrics_written_timestamp_seconds When this file was written
# TYPE kit_backup_metrics_written_timestamp_seconds gauge
kit_backup_metrics_written_timestamp_seconds 1796000100
"""


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


def _registry(collector: BackupFileCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


def test_the_backup_services_metrics_file_is_served_as_written(tmp_path):
    path = tmp_path / "backup.prom"
    path.write_text(BACKUP_METRICS + 'up{job="fake"} 1\n')
    registry = _registry(BackupFileCollector(path))
    value = registry.get_sample_value
    assert value("kit_backup_last_success_timestamp_seconds", {"type": "full"}) == 1796000000
    assert value("kit_backup_last_success_timestamp_seconds", {"type": "incr"}) == 0
    assert value("kit_backup_expected_interval_seconds") == 86400
    assert value("kit_backup_status", {"kind": "backup"}) == 1
    assert value("kit_backup_status", {"kind": "check"}) == 0
    assert value("kit_backup_metrics_written_timestamp_seconds") == 1796000100
    # Only its own namespace: the file cannot pose as another exporter's series.
    assert value("up", {"job": "fake"}) is None
    text = generate_latest(registry).decode()
    assert "# TYPE kit_backup_status gauge" in text


def test_a_missing_or_malformed_backup_file_exports_nothing_and_logs_once(tmp_path, caplog):
    path = tmp_path / "backup.prom"
    collector = BackupFileCollector(path)
    registry = _registry(collector)
    with caplog.at_level(logging.INFO, logger="worker.queue_exporter"):
        assert list(collector.collect()) == []
        path.write_text('kit_backup_status{kind="backup} 1\n')  # half a label
        assert list(collector.collect()) == []
        # The exposition still works: the other collectors' scrape must not fail with it.
        assert generate_latest(registry) == b""
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert [r.getMessage() for r in warnings] == ["backup metrics not served"]
        path.write_text(BACKUP_METRICS)
        assert registry.get_sample_value("kit_backup_status", {"kind": "backup"}) == 1
        assert "backup metrics served again" in caplog.messages
        path.unlink()
        assert list(collector.collect()) == []
    assert caplog.messages.count("backup metrics not served") == 2


@pytest.mark.skipif(
    shutil.which("jq") is None, reason="the scheduler reads pgbackrest info with jq"
)
def test_the_schedulers_own_output_is_what_the_exporter_serves(tmp_path):
    """The writer (db/bin/kit-backup-scheduler, its functions as written there, with a stand-in
    pgbackrest) and the reader agree on the format, and the write is a rename."""
    info = (
        '[{"backup": [{"type": "full", "timestamp": {"stop": 100}},'
        ' {"type": "diff", "timestamp": {"stop": 400}},'
        ' {"type": "full", "timestamp": {"stop": 600}}]}]'
    )
    (tmp_path / "bin").mkdir()
    fake = tmp_path / "bin" / "pgbackrest"
    fake.write_text(f"#!/bin/sh\necho '{info}'\n")
    fake.chmod(0o755)
    (tmp_path / "status").mkdir()
    script = "db/bin/kit-backup-scheduler"
    functions = "\n".join(
        shell_function(script, name)
        for name in ("status", "gauge", "metrics_text", "write_metrics")
    )
    proc = bash(
        f"""PATH={tmp_path / "bin"}:$PATH STATUS_DIR={tmp_path / "status"}
        METRICS_FILE={tmp_path / "backup.prom"} started_at=50 expected_every=86400
        {functions}
        status backup ok "full backup done"
        status offhost failed "off-host copy failed"
        write_metrics verify"""
    )
    assert proc.returncode == 0, proc.stderr
    assert [p.name for p in tmp_path.glob("backup.prom*")] == ["backup.prom"]
    assert (tmp_path / "backup.prom").stat().st_mode & 0o777 == 0o644
    registry = _registry(BackupFileCollector(tmp_path / "backup.prom"))
    value = registry.get_sample_value
    stops = {
        t: value("kit_backup_last_success_timestamp_seconds", {"type": t})
        for t in ("full", "diff", "incr")
    }
    assert stops == {"full": 600, "diff": 400, "incr": 0}
    assert value("kit_backup_expected_interval_seconds") == 86400
    assert value("kit_backup_status", {"kind": "backup"}) == 1
    assert value("kit_backup_status", {"kind": "offhost"}) == 0
    assert value("kit_backup_status_timestamp_seconds", {"kind": "offhost"}) > time.time() - 60
    assert value("kit_backup_in_progress", {"kind": "verify"}) == 1
    assert value("kit_backup_scheduler_start_timestamp_seconds") == 50
    assert value("kit_backup_metrics_written_timestamp_seconds") > time.time() - 60
