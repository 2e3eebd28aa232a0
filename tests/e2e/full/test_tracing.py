"""Traces end to end on the real stack: requests through Traefik, spans in Jaeger (its HTTP API,
on a loopback port as `make tunnel` reaches it), every hop in one trace and correctly parented;
the api's log line carries the same trace id; with tracing off the same requests make no span.

Its own compose project (kit-trace) and ports, beside the other e2e tests' stack; every trace kept
(TRACING_SAMPLE_RATIO=1) so that each request's trace is there to look at.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from redis import Redis

from core.settings import get_settings
from tests.support.auth import auth_headers
from tests.support.jobs import poll_job
from tests.support.stack import TRAEFIK_IMAGE, Stack, image_exists, require, wait_until

PROJECT = os.environ.get("KIT_TRACE_PROJECT", "kit-trace")
JAEGER_PORT = int(os.environ.get("KIT_TRACE_JAEGER_PORT", "56686"))
HTTPS_PORT = os.environ.get("KIT_TRACE_HTTPS_PORT", "58643")
REDIS_PORT = os.environ.get("KIT_TRACE_REDIS_PORT", "56479")
JAEGER_IMAGE = "jaegertracing/jaeger:2"
ON = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318", "TRACING_SAMPLE_RATIO": "1"}
OFF = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "TRACING_SAMPLE_RATIO": "1"}
# Batch exports leave every few seconds (the SDK's default delay is 5 s).
ARRIVE_WITHIN = 30


@pytest.fixture(scope="module")
def traced() -> Iterator[Stack]:
    require(image_exists(TRAEFIK_IMAGE), f"{TRAEFIK_IMAGE} (../shared/docker/standins)")
    require(image_exists(JAEGER_IMAGE), f"{JAEGER_IMAGE} (../shared/docker/standins)")
    stack = Stack(
        project=PROJECT,
        files=("compose.yaml", "tests/compose.test.yaml"),
        env={
            **ON,
            "HTTP_PORT": os.environ.get("KIT_TRACE_HTTP_PORT", "58280"),
            "HTTPS_PORT": HTTPS_PORT,
            "JAEGER_PORT": str(JAEGER_PORT),
            "ACCESS_LOG": "all",
            "KIT_TEST_DB_PORT": os.environ.get("KIT_TRACE_DB_PORT", "55532"),
            "KIT_TEST_REDIS_PORT": REDIS_PORT,
        },
    )
    down = ("--profile", "observability", "down", "-v", "--remove-orphans", "--timeout", "10")
    # Jaeger is a profile's service: a plain `down` would leave it running.
    stack.compose(*down, check=False)
    # Naming jaeger starts it without the rest of the profile.
    stack.compose(
        "up", "-d", "--build", "--wait", "--wait-timeout", "300", *stack.services, "jaeger"
    )
    yield stack
    if not os.environ.get("KIT_TEST_KEEP"):
        stack.compose(*down, check=False)


@pytest.fixture(scope="module")
def jaeger(traced) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{JAEGER_PORT}", timeout=10) as client:
        wait_until(lambda: client.get("/api/services").status_code == 200, within=60)
        yield client


@pytest.fixture(scope="module")
def http(traced) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"https://127.0.0.1:{HTTPS_PORT}",
        headers={"Host": "api.localhost", **auth_headers(get_settings(), "tracing")},
        verify=False,
        timeout=10,
    ) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, within=60)
        yield client


class Trace:
    """One trace as Jaeger's API returns it: spans by id, each with its service and parent."""

    def __init__(self, data: dict[str, Any]) -> None:
        processes = {pid: p["serviceName"] for pid, p in data["processes"].items()}
        self.spans = {
            s["spanID"]: {
                "name": s["operationName"],
                "service": processes[s["processID"]],
                "parent": next(
                    (r["spanID"] for r in s.get("references", []) if r["refType"] == "CHILD_OF"),
                    None,
                ),
                "tags": {t["key"]: t["value"] for t in s.get("tags", [])},
            }
            for s in data["spans"]
        }

    def of(self, service: str, name_part: str = "") -> list[dict[str, Any]]:
        return [
            s for s in self.spans.values() if s["service"] == service and name_part in s["name"]
        ]

    def parent(self, span: dict[str, Any]) -> dict[str, Any]:
        assert span["parent"] in self.spans, f"{span['name']}: its parent is not in the trace"
        return self.spans[span["parent"]]

    def root(self) -> dict[str, Any]:
        roots = [s for s in self.spans.values() if s["parent"] is None]
        assert len(roots) == 1, [r["name"] for r in roots]
        return roots[0]

    def under(self, span: dict[str, Any], ancestor: dict[str, Any]) -> bool:
        while span["parent"] is not None:
            span = self.spans[span["parent"]]
            if span is ancestor:
                return True
        return False


def fetch_trace(jaeger: httpx.Client, trace_id: str, *needed: str) -> Trace:
    """The trace once spans of every service in `needed` are in it."""

    def complete() -> Trace | None:
        response = jaeger.get(f"/api/traces/{trace_id}")
        if response.status_code != 200 or not response.json().get("data"):
            return None
        found = Trace(response.json()["data"][0])
        services = {s["service"] for s in found.spans.values()}
        return found if set(needed) <= services else None

    found = wait_until(complete, within=ARRIVE_WITHIN, every=1)
    assert found is not None
    return found


def _api_log_line(traced: Stack, request_id: str) -> dict[str, Any]:
    for line in traced.logs("api", tail=500).splitlines():
        _, _, text = line.partition("| ")
        if request_id in text and '"request"' in text:
            record: dict[str, Any] = json.loads(text)
            if record.get("request_id") == request_id and record.get("message") == "request":
                return record
    raise AssertionError(f"no access log line for {request_id}")


def _own_sql(sql: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request's SQL spans but a new Redis connection's read of the cache-debt ledger
    (api/cache_debts.py), and the PostgreSQL connect only when that read is there to open it."""
    own = [s for s in sql if "cache_debts" not in s["tags"].get("db.statement", "")]
    if len(own) < len(sql):
        own = [s for s in own if s["name"] != "connect"]
    return own


def test_a_write_a_read_and_a_cached_read_are_each_one_trace_from_traefik_down(
    http, jaeger, traced
):
    created = http.post("/items", json={"name": "traced"})
    assert created.status_code == 201, created.text
    item = created.json()["id"]
    # The write cached the item: forget it, so the next read goes to the database and fills it.
    Redis(port=int(REDIS_PORT)).delete(f"item:{item}")
    miss = http.get(f"/items/{item}", headers={"X-Request-ID": f"trace-{uuid.uuid4().hex}"})
    hit = http.get(f"/items/{item}")
    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("miss", "hit")
    for response, route, runs_sql in (
        (created, "POST /items", True),
        (miss, "GET /items/{item_id}", True),
        (hit, "GET /items/{item_id}", False),
    ):
        found = fetch_trace(jaeger, response.headers["x-trace-id"], "traefik", "api")
        assert found.root()["service"] == "traefik"
        server = found.of("api", route)
        assert len(server) == 1, [s["name"] for s in found.spans.values()]
        assert found.parent(server[0])["service"] == "traefik"
        redis = [s for s in found.of("api") if s["tags"].get("db.system") == "redis"]
        assert redis and all(found.under(s, server[0]) for s in redis), route
        sql = [s for s in found.of("api") if s["tags"].get("db.system") == "postgresql"]
        assert all(found.under(s, server[0]) for s in sql)
        # A request that opens a new Redis connection reads the cache-debt ledger first: that
        # is not the item's SQL, so it does not count here.
        assert bool(_own_sql(sql)) is runs_sql, f"{route}: {[s['name'] for s in sql]}"
    # The api's line for the read: its request id and its trace id, side by side.
    line = _api_log_line(traced, miss.headers["x-request-id"])
    assert line["trace_id"] == miss.headers["x-trace-id"]


def test_a_job_runs_in_the_trace_of_the_post_that_queued_it(http, jaeger):
    queued = http.post("/jobs", json={"cost": 1000})
    assert queued.status_code == 202, queued.text
    poll_job(lambda: http.get(queued.headers["location"]).json(), within=60, every=0.5)
    found = fetch_trace(jaeger, queued.headers["x-trace-id"], "traefik", "api", "worker")
    server = found.of("api", "POST /jobs")[0]
    assert found.parent(server)["service"] == "traefik"
    publish = found.of("api", "apply_async")
    assert len(publish) == 1 and found.under(publish[0], server)
    run = found.of("worker", "run")
    assert len(run) == 1, [s["name"] for s in found.spans.values()]
    assert found.under(run[0], publish[0]), "the worker's run is a child of the publish"
    writes = [s for s in found.of("worker") if s["tags"].get("db.system") == "postgresql"]
    assert writes and all(found.under(s, run[0]) for s in writes)


def test_with_tracing_off_the_same_requests_make_no_span(http, jaeger, traced):
    def count(service: str) -> int:
        body = jaeger.get("/api/traces", params={"service": service, "limit": 10000}).json()
        return len(body.get("data") or [])

    traced.compose("up", "-d", "--wait", "--wait-timeout", "240", *traced.services, **OFF)
    wait_until(lambda: http.get("/ready").status_code == 200, within=60)
    time.sleep(10)  # what the traced containers sent as they stopped has arrived
    before = {service: count(service) for service in ("traefik", "api", "worker")}
    created = http.post("/items", json={"name": "untraced"})
    assert "x-trace-id" not in created.headers
    http.get(f"/items/{created.json()['id']}")
    queued = http.post("/jobs", json={"cost": 1000})
    assert "x-trace-id" not in queued.headers
    poll_job(lambda: http.get(queued.headers["location"]).json(), within=60, every=0.5)
    # Longer than an export's delay: whatever would have been sent has arrived by now.
    time.sleep(10)
    assert {service: count(service) for service in before} == before
    traced.compose("up", "-d", "--wait", "--wait-timeout", "240", *traced.services, **ON)
