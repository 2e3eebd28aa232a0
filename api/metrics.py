"""Prometheus metrics, correct across gunicorn workers.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR (set in the image) makes every worker write its samples to
files there; /metrics merges them, and the gunicorn config clears the directory at start and marks
exited workers dead. Without it (tests, `uvicorn --reload`), the process's own registry is served.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)

REQUESTS = Counter("http_requests_total", "HTTP requests answered", ["method", "route", "status"])
LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time to answer an HTTP request",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CACHE_EVENTS = Counter("cache_events_total", "Item cache lookups and failures", ["event"])
JOBS_QUEUED = Counter("jobs_queued_total", "Jobs accepted and sent to the worker queue")


def render(multiproc_dir: str | None) -> tuple[bytes, str]:
    """multiproc_dir: Settings.prometheus_multiproc_dir (prometheus_client reads the same variable
    to decide where each process writes)."""
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
