"""The job queue and the volumes, seen from outside the worker: `python -m worker.queue_exporter`.

A service of its own (compose profile `observability`), not a part of the worker, because what it
measures matters most when the worker is gone: a stopped worker leaves jobs piling up, and its
own endpoint would vanish with it. Each scrape reads, with short timeouts:

- the Celery queue's length: LLEN of the queue's lists in the broker's Redis database (Celery's
  Redis transport keeps one list per priority step, `celery` first);
- the queued jobs and the oldest one's age, from the jobs table (state `queued`: accepted by the
  api, not yet taken by a worker, or put back by the reaper), and the jobs by state as the newest
  snapshot-job-counts tick counted them (job_count_snapshots: no count of the whole table here);
- each schedule's last tick, last success, next tick, lateness and failures, from the claims
  table (worker/schedule_metrics.py), in the same PostgreSQL read;
- free and total bytes of every volume mounted under VOLUMES_DIR (statvfs: the filesystem the
  volume lives on, which is what fills up; no node-exporter here);
- the backup service's metrics (kit_backup_*), a Prometheus text file it rewrites every round in
  a volume mounted here read-only (BACKUP_METRICS_FILE): its image has no HTTP server of its own.

A source that does not answer within SOURCE_DEADLINE_SECONDS is reported by
`job_exporter_source_up{source=...} 0` and its metrics are left out of that scrape, rather than
the scrape failing: Redis down must not hide the disk. The deadline covers the name lookup, which
no socket timeout does: a stopped container's name is unknown on the internal network, and the
lookup waits for a resolver it cannot reach (seconds). So each source is read in a thread, and
the scrape waits for it no longer than the deadline.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import start_http_server
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from sqlalchemy import Engine, func, select

from core.logs import configure_logging
from core.models import Job, JobCountSnapshot, JobState
from core.settings import Settings, get_settings
from core.sync_engine import make_sync_engine
from worker import schedule_metrics
from worker.schedules import load

log = logging.getLogger(__name__)

CELERY_QUEUE = "celery"
# kombu's Redis transport: the queue's list for priority 0 is the name itself, the others are
# `<name>\x06\x16<priority>` (priority_steps 0, 3, 6, 9).
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)
TIMEOUT_SECONDS = 3
# Below the tests' 2 s scrape timeout, and far below production's 10 s.
SOURCE_DEADLINE_SECONDS = 1.5


def queue_keys(queue: str = CELERY_QUEUE) -> list[str]:
    return [queue if step == 0 else f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]


class QueueCollector(Collector):
    def __init__(self, settings: Settings, volumes_dir: Path) -> None:
        self.volumes_dir = volumes_dir
        self.schedules = load(settings)
        self.lease = timedelta(seconds=settings.job_lease_seconds)
        self.started = datetime.now(UTC)
        # Room for reads abandoned at the deadline while their lookups still wait.
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="source")
        self.redis = redis.Redis.from_url(
            settings.broker_url,
            socket_timeout=TIMEOUT_SECONDS,
            socket_connect_timeout=TIMEOUT_SECONDS,
        )
        # No pool: one short query per scrape, and nothing held open between scrapes.
        self.engine: Engine = make_sync_engine(
            settings,
            "queue-exporter",
            connect_timeout=TIMEOUT_SECONDS,
            statement_timeout_ms=TIMEOUT_SECONDS * 1000,
        )

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "job_exporter_source_up",
            "Whether the source answered this scrape (1) or not (0)",
            labels=["source"],
        )
        # Both at once, each under the deadline; a late one is abandoned (its thread ends on its
        # own timeouts) and counted as not answering.
        reads = {"redis": self._read_redis, "postgres": self._read_postgres}
        futures = {name: self.pool.submit(read) for name, read in reads.items()}
        for name, future in futures.items():
            try:
                metrics = future.result(timeout=SOURCE_DEADLINE_SECONDS)
            except Exception as exc:  # any failure means the same: no answer this scrape
                log.warning("source unavailable", extra={"source": name, "error": repr(exc)})
                up.add_metric([name], 0)
                continue
            up.add_metric([name], 1)
            yield from metrics
        yield from self._volumes()
        yield up

    def _read_redis(self) -> list[Metric]:
        with self.redis.pipeline(transaction=False) as pipe:
            for key in queue_keys():
                pipe.llen(key)
            lengths = pipe.execute()
        depth = GaugeMetricFamily(
            "celery_queue_length", "Task messages waiting in the broker's queue", labels=["queue"]
        )
        depth.add_metric([CELERY_QUEUE], float(sum(int(n) for n in lengths)))
        return [depth]

    def _read_postgres(self) -> list[Metric]:
        query = select(
            func.count(),
            func.coalesce(func.extract("epoch", func.now() - func.min(Job.created_at)), 0),
        ).where(Job.state == JobState.queued)
        counted = (getattr(JobCountSnapshot, state.value) for state in JobState)
        newest = (
            select(JobCountSnapshot.tick, *counted).order_by(JobCountSnapshot.tick.desc()).limit(1)
        )
        with self.engine.connect() as connection:
            count, age = connection.execute(query).one()
            snapshot = connection.execute(newest).one_or_none()
            states = schedule_metrics.read(connection, self.schedules, self.lease, self.started)
        found: list[Metric] = [
            GaugeMetricFamily("jobs_queued", "Jobs in state queued", value=float(count)),
            GaugeMetricFamily(
                "jobs_oldest_queued_age_seconds",
                "Age of the oldest job in state queued (0 when none is)",
                value=float(age),
            ),
        ]
        if snapshot is not None:
            by_state = GaugeMetricFamily(
                "jobs_by_state", "Jobs by state at the newest job count snapshot", labels=["state"]
            )
            for state in JobState:
                by_state.add_metric([state.value], float(getattr(snapshot, state.value)))
            found += [
                by_state,
                GaugeMetricFamily(
                    "jobs_by_state_snapshot_timestamp_seconds",
                    "The tick of the newest job count snapshot",
                    value=snapshot.tick.timestamp(),
                ),
            ]
        return found + schedule_metrics.metrics(states)

    def _volumes(self) -> Iterator[Metric]:
        free = GaugeMetricFamily(
            "volume_free_bytes",
            "Bytes available to unprivileged users on the volume's filesystem",
            labels=["volume"],
        )
        size = GaugeMetricFamily(
            "volume_size_bytes", "Size of the volume's filesystem", labels=["volume"]
        )
        if self.volumes_dir.is_dir():
            for mount in sorted(self.volumes_dir.iterdir()):
                try:
                    stat = os.statvfs(mount)
                except OSError:
                    continue
                free.add_metric([mount.name], float(stat.f_bavail * stat.f_frsize))
                size.add_metric([mount.name], float(stat.f_blocks * stat.f_frsize))
        yield free
        yield size


class BackupFileCollector(Collector):
    """The backup service's metrics file, read at each scrape and served as written.

    A missing, unreadable or malformed file yields nothing (BackupMetricsStale fires on the
    absence) rather than failing the scrape, which would hide the queue and the disks too; it is
    logged once, not at every scrape, until the file is good again. Only kit_backup_* families
    pass: whatever else the file held must not pose as this exporter's own series.
    """

    PREFIX = "kit_backup_"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.failing = False

    def collect(self) -> Iterator[Metric]:
        try:
            families = list(text_string_to_metric_families(self.path.read_text()))
        except Exception as exc:  # missing, unreadable, half-written by hand: all the same here
            if not self.failing:
                log.warning(
                    "backup metrics not served", extra={"file": str(self.path), "error": repr(exc)}
                )
                self.failing = True
            return
        if self.failing:
            log.info("backup metrics served again", extra={"file": str(self.path)})
            self.failing = False
        yield from (family for family in families if family.name.startswith(self.PREFIX))


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def main() -> None:
    settings = get_settings()
    settings.require_secrets("postgres_password", "redis_password")
    port = settings.job_exporter_port
    if sys.argv[1:] == ["--healthcheck"]:
        sys.exit(0 if healthy(port) else 1)
    configure_logging(settings.log_level)
    registry = CollectorRegistry()
    registry.register(QueueCollector(settings, Path(settings.volumes_dir)))
    registry.register(BackupFileCollector(Path(settings.backup_metrics_file)))
    start_http_server(port, registry=registry)
    log.info("job exporter serving", extra={"port": port})
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
