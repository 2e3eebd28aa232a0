"""make bench's configuration: the settings it reads from the environment, the names it gives
its stack and baseline containers, the request rows in their groups and the comparisons between
them. Importing this module starts nothing."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WARMUP_SECONDS = 2  # each row once, unmeasured, before the first round
# Each system under test left alone, for its idle CPU: longer than the 5 s health-check interval
# of the api and worker containers, whose probes are most of it.
IDLE_SECONDS = 12
SEED_ITEMS = 50_000
JOBS, JOB_COST = 24, 300_000  # ~0.5 s of CPU each: enough to show parallelism
# Another stack on the engine may hold it: it can be moved.
HTTPS_PORT = int(os.environ.get("BENCH_HTTPS_PORT", "58543"))
BASE_IMAGE = "python:3.12-slim"
# Raised for the benchmarks: the proxy rows measure TLS and routing, not the limiter's refusals.
NO_RATE_LIMIT = {"RATE_LIMIT_AVERAGE": "1000000", "RATE_LIMIT_BURST": "1000000"}
ENV = {"APP_TAG": "bench", **NO_RATE_LIMIT, "BENCH_HTTPS_PORT": str(HTTPS_PORT)}
PROJECT = "kit-bench"
API_IMAGE = "fastapi-kit-api:bench"
WORKER_IMAGE = "fastapi-kit-worker:bench"
PEER_IMAGE = "fastapi-kit-bench-peer:bench"  # bench/compose.peer.yaml
PROXY_HEADERS = {"Host": "api.localhost"}
PROXY_PORT = 8443  # Traefik's HTTPS entrypoint inside its container
TUTORIAL_CONTAINER = "kit-bench-tutorial"
BARE_CONTAINER = "kit-bench-bare"
PEER_CONTAINER = "kit-bench-peer"
# The public images the stack and the baselines run, for the record of what was inside them.
IMAGES = (
    BASE_IMAGE,
    "postgres:17",
    "redis:7",
    "traefik:v3.6",
    "haproxy:3.2-alpine",
    "ghcr.io/astral-sh/uv:0.9.5",
)

# Request rows, in groups. A group's rows run back to back, in an order that rotates each round;
# every ratio below divides two rows of one group, measured in the same round.
GROUPS: dict[str, tuple[str, ...]] = {
    "health": ("health", "bare_health", "health_via_proxy"),
    "item_cached": ("item_cached", "tutorial_item", "item_cached_via_proxy"),
    "item_db": ("item_db", "peer_item"),
    "items_page": ("items_page", "peer_page"),
    "create_item": ("create_item", "peer_create"),
}
PHASES = ("requests", "tuning", "scaling", "tracing", "operations")


@dataclass(frozen=True)
class Comparison:
    row: str
    baseline: str
    what: str
    goal: float | None = None  # the row must reach goal times the baseline (ratio of medians)


COMPARISONS = (
    Comparison("health", "bare_health", "kit /health vs the bare ASGI ceiling (same gunicorn)"),
    Comparison("health_via_proxy", "health", "/health through Traefik (TLS) vs direct"),
    Comparison(
        "item_cached", "tutorial_item", "cached item vs the one-process tutorial's item", 1.0
    ),
    Comparison("item_db", "peer_item", "item from the database vs the template peer", 2.0),
    Comparison("items_page", "peer_page", "a page of 20 vs the template peer", 2.0),
    Comparison("create_item", "peer_create", "create vs the template peer", 2.0),
    Comparison(
        "item_cached_via_proxy", "item_cached", "cached item through Traefik (TLS) vs direct", 0.5
    ),
)


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def selected(variable: str, choices: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The comma list in an environment variable (unset: all choices), checked against them."""
    raw = os.environ.get(variable, "")
    chosen = tuple(x.strip() for x in raw.split(",") if x.strip()) or tuple(choices)
    unknown = [x for x in chosen if x not in choices]
    if unknown:
        raise SystemExit(f"{variable}: unknown {unknown}; choose from {list(choices)}")
    return chosen
