"""The scaling rows: gunicorn workers, Celery processes and api replicas, one run each, the two
sides measured next to each other. Importing this module starts nothing."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.config import PROXY_HEADERS, WARMUP_SECONDS, log
from bench.figures import Wrk
from bench.phases.requests import Seeded
from bench.stack import BenchStack, Memory
from bench.wrk import wrk


@dataclass(frozen=True)
class Scaling:
    default_workers: int
    default_worker_rps: float  # cached item, the default worker count, right before one_worker
    one_worker: Wrk  # cached item, WEB_CONCURRENCY=1
    memory_no_preload: Memory
    jobs_per_second: float  # default CELERY_CONCURRENCY
    one_celery_jobs_per_second: float  # right after
    one_replica: Wrk  # cached item via the proxy, one api container
    two_replicas: Wrk  # right after, api scaled to 2


def scaling_rows(stack: BenchStack, seeded: Seeded) -> Scaling:
    log("scaling")
    item = f"/items/{seeded.first_id}"
    default_workers = stack.web_concurrency()
    stack.recreate("api")
    wrk(f"{stack.api_url()}{item}", seconds=WARMUP_SECONDS)  # each fresh container warmed first
    default_worker_rps = wrk(f"{stack.api_url()}{item}").rps
    stack.recreate("api", WEB_CONCURRENCY="1")
    wrk(f"{stack.api_url()}{item}", seconds=WARMUP_SECONDS)
    one_worker = wrk(f"{stack.api_url()}{item}")
    stack.recreate("api", GUNICORN_PRELOAD_APP="false")
    wrk(f"{stack.api_url()}{item}", seconds=2)  # warm every worker
    memory_no_preload = stack.worker_memory()
    stack.recreate("api")
    jobs_per_second = stack.submit_jobs(stack.api_url(), seeded.token)
    stack.recreate("worker", CELERY_CONCURRENCY="1")
    one_celery = stack.submit_jobs(stack.api_url(), seeded.token)
    stack.recreate("worker")
    proxied = f"{stack.proxy_url()}{item}"
    one_replica = wrk(proxied, headers=PROXY_HEADERS)
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=2", "api")
    time.sleep(3)  # Traefik picks up the second replica
    wrk(proxied, headers=PROXY_HEADERS, seconds=WARMUP_SECONDS)
    two_replicas = wrk(proxied, headers=PROXY_HEADERS)
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=1", "api")
    return Scaling(
        default_workers=default_workers,
        default_worker_rps=default_worker_rps,
        one_worker=one_worker,
        memory_no_preload=memory_no_preload,
        jobs_per_second=jobs_per_second,
        one_celery_jobs_per_second=one_celery,
        one_replica=one_replica,
        two_replicas=two_replicas,
    )
