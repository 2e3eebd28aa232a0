"""Faults under steady load: the real stack, many keep-alive clients, one fault at a time, and
counts of what failed, how, and for how long (tests/support/load.py records every request).

Each scenario prints its counts (run with -s to see them); docs/resilience.md quotes them.
"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

from tests.support import stack as stack_module
from tests.support.load import LoadResult, cycle, get, post, steady_load
from tests.support.stack import container_url, run, wait_until

CLIENTS = 32
WARM_UP = 3.0
SETTLE = 3.0


def report(name: str, load: LoadResult, fault: float) -> None:
    print(f"\n[chaos] {name}: {load.summary(fault)}")


@pytest.fixture
def direct(stack) -> str:
    return container_url(stack.container_ids("api")[0])


@pytest.fixture(scope="module")
def proxied(stack) -> tuple[str, dict[str, str]]:
    stack_module.require(stack.with_proxy, stack_module.TRAEFIK_IMAGE)
    return f"https://127.0.0.1:{stack_module.HTTPS_PORT}", {"Host": "api.localhost"}


@pytest.fixture(scope="module")
def item_ids(http, auth) -> list[int]:
    ids = [
        http.post("/items", json={"name": f"chaos-{i}"}, headers=auth).json()["id"]
        for i in range(8)
    ]
    for item_id in ids:
        http.get(f"/items/{item_id}")  # cached from here on
    return ids


def _ready(url: str, headers: dict[str, str] | None = None) -> bool:
    return httpx.get(f"{url}/ready", headers=headers, verify=False, timeout=3).status_code == 200


def test_postgres_restart_answers_503_never_500(stack, direct, auth, item_ids):
    requests = cycle(
        get("/items?limit=20"),
        post("/items", {"name": "written during a database restart"}, **auth),
        get(f"/items?limit=5&after={item_ids[0]}"),
    )
    # A request queued for a connection through the outage is answered 503 after DB_POOL_TIMEOUT
    # (10 s): the client waits longer than that, or the answer would be counted as no answer.
    with steady_load(direct, requests, connections=CLIENTS, timeout=15) as load:
        time.sleep(WARM_UP)
        fault = time.monotonic()
        stack.compose("restart", "db")
        wait_until(lambda: _ready(direct), within=60)
        # Requests that queued for a connection during the outage may still time out (503) up
        # to DB_POOL_TIMEOUT (10 s) after it: wait past that to see the service whole again.
        time.sleep(SETTLE + 10)
    report("PostgreSQL restart", load, fault)

    kinds = load.kinds()
    assert kinds["500"] == 0, kinds
    assert kinds["lost"] + kinds["refused"] + kinds["timeout"] == 0, kinds
    unavailable = [o for o in load.outcomes if o.kind.startswith("5")]
    assert all(o.kind == "503" for o in unavailable), kinds
    assert all(o.retry_after and o.request_id for o in unavailable)
    assert load.recovered_after(fault) < 30
    assert any(o.ok for o in load.between(fault + load.recovered_after(fault)))


def _error_lines(stack, since: str) -> list[str]:
    logs = stack.compose("logs", "--no-color", "--since", since, "api", check=False).stdout
    return [
        line
        for line in logs.splitlines()
        if "unhandled exception" in line or "never retrieved" in line or "Traceback" in line
    ]


def test_redis_outage_costs_no_errors_and_little_latency(stack, direct, item_ids):
    requests = cycle(*(get(f"/items/{i}") for i in item_ids), get("/items?limit=5"))
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    with steady_load(direct, requests, connections=CLIENTS) as load:
        time.sleep(WARM_UP + 2)
        fault = time.monotonic()
        stack.compose("stop", "redis")
        time.sleep(6)
        back = time.monotonic()
        stack.compose("start", "redis")
        stack.wait_healthy("redis", timeout=60)
        recovered = time.monotonic()
        time.sleep(SETTLE)
    report("Redis stopped for 6 s", load, fault)

    before = load.between(fault - WARM_UP, fault)
    during = load.between(fault, back)
    after = load.between(recovered, recovered + SETTLE)
    p99_before, p99_during = load.p99(before), load.p99(during)
    p99_after = load.p99(after)
    print(
        f"[chaos] p99 before {p99_before * 1000:.1f} ms, during {p99_during * 1000:.1f} ms, "
        f"after {p99_after * 1000:.1f} ms"
    )
    assert load.failures() == [], load.kinds()
    # The regression this guards against is a reconnect stall (1.2 s p99 against under 100 ms).
    # The reference is the noisier of the two windows with Redis up, before and after: on two
    # shared cores one window's p99 alone drifts by 2x between runs (measured: 107 ms before,
    # 253 ms during, in one run of the whole suite; under 2x in isolation).
    assert p99_during <= 2 * max(p99_before, p99_after)
    assert _error_lines(stack, since) == []


def test_graceful_stop_loses_no_request_sent_before_it(stack, direct, item_ids):
    """64 keep-alive clients on the api directly; `docker compose stop api`. Every request sent
    before the stop is answered. After it the api drains (GUNICORN_DRAIN_SECONDS, answering with
    `Connection: close`) and then goes away: requests sent to it directly from then on may fail,
    as with any server that stops; behind Traefik they go to another replica (deploy test)."""
    requests = cycle(*(get(f"/items/{i}") for i in item_ids))
    try:
        with steady_load(direct, requests, connections=64) as load:
            time.sleep(WARM_UP)
            fault = time.monotonic()
            stack.compose("stop", "api")
            time.sleep(1)
        report("graceful stop", load, fault)
        before = load.between(0, fault)
        assert load.failures(before) == [], load.kinds(before)
        answered_while_draining = [o for o in load.between(fault) if o.ok]
        assert answered_while_draining, "the api stopped answering at once: no drain"
    finally:
        stack.compose("start", "api")
        stack.wait_healthy("api")


def _api_with(stack, **env: str) -> str:
    """Recreate the api with test-only settings (tests/compose.test.yaml); the new direct URL."""
    stack.compose("up", "-d", "--wait", "--no-deps", "api", **env)
    stack.wait_healthy("api")
    return container_url(stack.container_ids("api")[0])


def test_worker_recycling_and_reload_lose_no_request(stack, auth, item_ids, proxied):
    """GUNICORN_MAX_REQUESTS is off by default; turned on (low, so workers recycle every few
    seconds) and with a gunicorn reload (SIGHUP), no client request may fail, POSTs included."""
    base, host = proxied
    try:
        url = _api_with(stack, KIT_TEST_GUNICORN_MAX_REQUESTS="300")
        requests = cycle(
            *(get(f"/items/{i}") for i in item_ids),
            post("/items", {"name": "written while workers recycle"}, **auth),
        )
        with steady_load(url, requests, connections=CLIENTS, max_seconds=60) as direct_load:
            time.sleep(12)
            fault = time.monotonic()
            stack.compose("kill", "-s", "HUP", "api")
            time.sleep(8)
        report("recycling every 300 requests + SIGHUP, direct", direct_load, fault)
        with steady_load(base, requests, headers=host, connections=8, rate=150) as proxy_load:
            time.sleep(10)
        report("recycling every 300 requests, through the proxy", proxy_load, fault)
        # Direct, a few requests in 10,000 are still reset (goal: 0; why recycling is off by
        # default); through the proxy, none.
        assert len(direct_load.failures()) <= len(direct_load.outcomes) // 200, direct_load.kinds()
        assert {o.kind for o in direct_load.failures()} <= {"lost"}, direct_load.kinds()
        assert proxy_load.failures() == [], proxy_load.kinds()
        assert len(direct_load.outcomes) > 3000, "too few requests to recycle the workers"
    finally:
        _api_with(stack)


def _kill_main_process(stack, container: str) -> int:
    """SIGKILL the container's PID 1 from the host: a crash, which the restart policy handles
    (`docker kill` would be a manual stop, which Docker does not restart)."""
    state = stack.inspect(container)
    os.kill(state["State"]["Pid"], signal.SIGKILL)
    return int(state["RestartCount"])


@pytest.mark.parametrize("replicas", [2, 1])
def test_api_crash_behind_the_proxy(stack, auth, item_ids, proxied, replicas):
    """Two replicas: a crash costs only the requests caught at that moment. One replica: ~6 s
    of errors until the restarted container is healthy, counted (docs/resilience.md:
    API_REPLICAS=2 is the production default)."""
    base, host = proxied
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", f"api={replicas}", "api")
    try:
        victim = stack.wait_healthy("api")[0]
        requests = cycle(
            *(get(f"/items/{i}") for i in item_ids),
            get("/items?limit=10"),
            post("/items", {"name": "written during an api crash"}, **auth),
        )
        with steady_load(base, requests, headers=host, connections=16, rate=150) as load:
            time.sleep(WARM_UP)
            fault = time.monotonic()
            restarts = _kill_main_process(stack, victim)
            wait_until(lambda: stack.inspect(victim)["RestartCount"] > restarts, within=60)
            stack.wait_healthy("api", timeout=120)
            time.sleep(SETTLE)
        report(f"api crash, {replicas} replica(s), through the proxy", load, fault)
        failed = load.failures()
        if replicas == 2:
            # Measured: a handful of 502s at the moment of the crash, which Traefik's retry does
            # not resend (the goal is 0 failed GETs: not reached yet), then nothing.
            assert len(failed) <= len(load.outcomes) // 100, load.kinds()
            assert all(o.sent < fault + 2 for o in failed), load.kinds()
        else:
            assert load.recovered_after(fault) < 60
            # No router while no container is healthy: `unavailable` answers, never a 404.
            assert load.kinds()["404"] == 0, load.kinds()
            unavailable = [o for o in failed if o.kind == "503"]
            assert unavailable, "the outage was never answered by the fallback"
            assert all(o.retry_after for o in unavailable), load.kinds()
    finally:
        stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=1", "api")


def _drain(stack, on: bool) -> None:
    for container in stack.container_ids("api"):
        run(["docker", "exec", container, "python", "-m", "api.drain", "on" if on else "off"])


def test_every_replica_draining_answers_503_with_retry_after(stack, item_ids, proxied):
    """Every api container out of Traefik's rotation (healthy to Docker, failing /health/routable):
    the failover service sends to `unavailable`, whose 503 has the api's error shape and
    Retry-After; a host the kit does not serve still gets Traefik's 404."""
    base, host = proxied
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=2", "api")
    try:
        requests = cycle(*(get(f"/items/{i}") for i in item_ids))
        with steady_load(base, requests, headers=host, connections=8, rate=100) as load:
            time.sleep(WARM_UP)
            fault = time.monotonic()
            _drain(stack, on=True)
            # Out of the rotation within a health-check interval (2 s) of the drain.
            wait_until(lambda: _status(base, host) == 503, within=10)
            during = time.monotonic()
            time.sleep(6)
            answer = httpx.get(f"{base}/items/{item_ids[0]}", headers=host, verify=False)
            other = httpx.get(base, headers={"Host": "not-served.localhost"}, verify=False)
            _drain(stack, on=False)
            wait_until(lambda: _status(base, host) == 200, within=10)
            time.sleep(SETTLE)
        report("every replica draining, through the proxy", load, fault)
        assert answer.status_code == 503
        assert answer.json() == {"detail": "the api is unavailable; try again shortly"}
        assert answer.headers["Retry-After"] == "5"
        assert answer.headers["Content-Type"] == "application/json"
        assert "Strict-Transport-Security" in answer.headers
        assert other.status_code == 404
        assert set(load.kinds()) <= {"200", "503"}, load.kinds()
        held = load.between(during + 1, during + 6)
        assert held and {o.kind for o in held} == {"503"}, load.kinds(held)
        assert all(o.retry_after for o in load.failures()), load.kinds()
    finally:
        _drain(stack, on=False)
        stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=1", "api")


def _status(base: str, host: dict[str, str]) -> int:
    return httpx.get(f"{base}/health", headers=host, verify=False, timeout=5).status_code


def test_a_write_during_a_redis_outage_is_never_read_stale(stack, direct, auth):
    """Redis keeps its data across a restart: the copy cached before the outage comes back. The
    process that made the write knows it; the other gunicorn worker (two in the test stack) must
    not serve the old copy either. Many reads on fresh connections reach both workers."""

    def read() -> str:
        with httpx.Client(base_url=direct, timeout=10) as client:  # a new connection each time
            return client.get(f"/items/{item_id}").json()["name"]

    with httpx.Client(base_url=direct, timeout=10) as client:
        item_id = client.post("/items", json={"name": "before"}, headers=auth).json()["id"]
    assert {read() for _ in range(10)} == {"before"}  # cached now
    stack.compose("stop", "redis")
    try:
        with httpx.Client(base_url=direct, timeout=10) as client:
            r = client.put(f"/items/{item_id}", json={"name": "after"}, headers=auth)
        assert r.status_code == 200
    finally:
        stack.compose("start", "redis")
        stack.wait_healthy("redis")
    names = [read() for _ in range(60)]
    assert set(names) == {"after"}, names.count("before")
