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
# Bound once (a labels() call per lookup costs more than the increment); every series exists at 0.
CACHE_HIT, CACHE_MISS, CACHE_BYPASS, CACHE_ERROR = (
    CACHE_EVENTS.labels(event=event) for event in ("hit", "miss", "bypass", "error")
)
JOBS_QUEUED = Counter("jobs_queued_total", "Jobs accepted and sent to the worker queue")

# labels() validates and looks its child up under a lock on every call; the children of the label
# sets seen are kept here instead. Bounded, as a client chooses the method: past the bound, or for
# an unmatched path, labels() is called as before.
_REQUEST_CHILDREN_MAX = 512
_request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """One answered request: its count and its duration."""
    key = (method, route, status)
    children = _request_children.get(key)
    if children is None:
        children = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        if route != "unmatched" and len(_request_children) < _REQUEST_CHILDREN_MAX:
            _request_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def render(multiproc_dir: str | None) -> tuple[bytes, str]:
    """multiproc_dir: Settings.prometheus_multiproc_dir (prometheus_client reads the same variable
    to decide where each process writes)."""
    if multiproc_dir:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
