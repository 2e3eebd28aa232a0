"""The kit as users run it: built images, `docker compose up`, HTTP(S), kills and restarts."""

from __future__ import annotations

import json
import os
import re
import signal

import httpx
import pytest

from tests.support import stack as stack_module
from tests.support.jobs import poll_job
from tests.support.stack import PID1_CHILDREN, wait_until
from worker.compute import iterated_sha256

needs_proxy = pytest.mark.skipif(
    not stack_module.image_exists(stack_module.TRAEFIK_IMAGE),
    reason="PROXY NOT EXERCISED: no traefik image on this machine",
)


def test_servers_start_without_errors(http, stack):
    """gunicorn and uvicorn log nothing at ERROR: a new server release once logged one at every
    start (its control socket), which would have hidden real errors in plain sight."""
    server_errors = [
        line
        for line in stack.logs("api", tail=2000).splitlines()
        if re.search(r'"logger": "(gunicorn|uvicorn)\.error"', line)
        and re.search(r'"level": "(ERROR|CRITICAL)"', line)
    ]
    assert server_errors == []


def test_item_and_cache_paths(http, auth):
    r = http.post("/items", json={"name": "e2e", "price_cents": 1}, headers=auth)
    assert r.status_code == 201
    item_url = r.headers["location"]
    assert http.get(item_url).headers["x-cache"] == "hit"  # written through on create
    http.put(item_url, json={"name": "e2e-2"}, headers=auth)
    assert http.get(item_url).json()["name"] == "e2e-2"
    assert http.delete(item_url, headers=auth).status_code == 204
    assert http.get(item_url).status_code == 404


def test_job_path(http, auth):
    r = http.post("/jobs", json={"cost": 50_000, "seed": "e2e"}, headers=auth)
    assert r.status_code == 202
    done = poll_job(lambda: http.get(r.headers["location"]).json(), within=90, every=0.5)
    assert done["state"] == "succeeded"
    assert done["result"] == iterated_sha256("e2e", 50_000)


def test_every_response_carries_a_request_id(http):
    r = http.get("/items?limit=1", headers={"X-Request-ID": "trace-me-42"})
    assert r.headers["x-request-id"] == "trace-me-42"
    answered = http.get("/whoami", headers={"X-Request-ID": "seen-by-the-app"})
    assert answered.json()["request_id"] == "seen-by-the-app"
    assert re.fullmatch(r"[0-9a-f]{32}", http.get("/health").headers["x-request-id"])


def test_metrics_are_exact_across_gunicorn_workers(http, stack):
    """WEB_CONCURRENCY=2 in the test stack: each scrape must sum every worker's samples."""
    pattern = re.compile(r'http_requests_total\{method="GET",route="/whoami",status="200"\} (\S+)')

    def count() -> float:
        match = pattern.search(http.get("/metrics").text)
        return float(match.group(1)) if match else 0.0

    before = count()
    # 80 requests on fresh, concurrent connections, so both workers accept some of them.
    stack.exec_python(
        "api",
        "import urllib.request as u\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        "get = lambda _: u.urlopen('http://127.0.0.1:8000/whoami').read()\n"
        "list(ThreadPoolExecutor(8).map(get, range(80)))\n",
    )
    files = stack.exec_python(
        "api", "import glob;print(len(glob.glob('/tmp/metrics/counter_*.db')))"
    )
    assert int(files) >= 2, "expected samples from at least two gunicorn worker processes"
    for _ in range(5):
        assert count() == before + 80


@needs_proxy
def test_https_redirect_headers_and_routing(stack):
    http_url = f"http://127.0.0.1:{stack_module.HTTP_PORT}/health"
    r = httpx.get(http_url, headers={"Host": "api.localhost"}, follow_redirects=False)
    assert r.status_code in (301, 308)
    # To the published HTTPS port (443 would be left out of the URL), not the container's 8443.
    assert r.headers["location"] == f"https://api.localhost:{stack_module.HTTPS_PORT}/health"

    https = f"https://127.0.0.1:{stack_module.HTTPS_PORT}"
    r = httpx.get(f"{https}/health", headers={"Host": "api.localhost"}, verify=False)
    assert r.status_code == 200
    assert r.headers["strict-transport-security"].startswith("max-age=31536000")
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["x-frame-options"] == "DENY"
    assert "server" not in r.headers
    unknown = httpx.get(f"{https}/health", headers={"Host": "nope.localhost"}, verify=False)
    assert unknown.status_code == 404


@needs_proxy
def test_the_proxy_logs_every_request_with_the_apps_request_id(stack):
    """The access log lives at the edge (the app logs only problems, ACCESS_LOG): each line has
    the X-Request-ID the app answered with, the key to the app's own lines."""
    https = f"https://127.0.0.1:{stack_module.HTTPS_PORT}"

    def answered_by_the_app(n: int) -> str:
        # Healthy is not yet routed: Traefik adds the api at its next active health check, and
        # until then answers 404 itself (no request id: KeyError, retried).
        answer = httpx.get(f"{https}/items/{n}", headers={"Host": "api.localhost"}, verify=False)
        return answer.headers["x-request-id"]

    ids = {wait_until(lambda n=n: answered_by_the_app(n), within=30) for n in (1, 2, 3)}
    assert len(ids) == 3

    def logged() -> set[str] | None:
        seen = set()
        for line in stack.logs("proxy", tail=500).splitlines():
            _, _, text = line.partition("| ")
            if text.startswith("{") and '"downstream_X-Request-Id"' in text:
                seen.add(json.loads(text)["downstream_X-Request-Id"])
        return seen if ids <= seen else None

    assert wait_until(logged, within=10, every=0.5)


@needs_proxy
def test_large_responses_are_compressed(http, auth):
    for i in range(30):
        http.post("/items", json={"name": f"bulk-{i}", "description": "d" * 100}, headers=auth)
    r = http.get("/items?limit=30", headers={"Accept-Encoding": "gzip"})
    assert r.headers.get("content-encoding") == "gzip"


def test_spoofed_forwarded_headers_are_not_trusted(http, stack):
    spoof = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https"}
    seen = http.get("/whoami", headers=spoof).json()
    assert seen["client"] != "6.6.6.6"
    if stack.with_proxy:
        assert seen["scheme"] == "https"  # set by Traefik, trusted from the edge network

    # From inside the api container: not the proxy's network, so the headers are ignored.
    inside = stack.exec_python(
        "api",
        "import json,urllib.request as u;"
        "r=u.Request('http://127.0.0.1:8000/whoami',headers={'X-Forwarded-For':'6.6.6.6',"
        "'X-Forwarded-Proto':'https'});print(u.urlopen(r).read().decode())",
    )
    assert '"client":"127.0.0.1"' in inside
    assert '"scheme":"http"' in inside


def _main_pid(stack, service: str) -> tuple[str, int]:
    container = stack.container_ids(service)[0]
    return container, stack.inspect(container)["State"]["Pid"]


def test_killed_api_is_restarted_by_its_policy(http, stack):
    container, pid = _main_pid(stack, "api")
    restarts = stack.inspect(container)["RestartCount"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: stack.inspect(container)["RestartCount"] > restarts, within=60)
    stack.wait_healthy("api", timeout=120)
    wait_until(lambda: http.get("/ready").status_code == 200, within=60)


def _running_job(http, auth, cost: int, seed: str) -> str:
    r = http.post("/jobs", json={"cost": cost, "seed": seed}, headers=auth)
    location = r.headers["location"]
    wait_until(lambda: http.get(location).json()["state"] == "running", within=60, every=0.2)
    return location


def test_worker_process_killed_mid_job_is_redelivered(http, auth, stack):
    """The pool process running the job dies: reject_on_worker_lost requeues it at once."""
    location = _running_job(http, auth, 4_000_000, "pool-kill")
    stack.exec_python(
        "worker",
        PID1_CHILDREN + "import signal\nfor p in pid1_children(): os.kill(p, signal.SIGKILL)\n",
    )
    done = poll_job(lambda: http.get(location).json(), within=120, every=0.5)
    assert done["state"] == "succeeded"
    assert done["attempts"] >= 2
    assert done["result"] == iterated_sha256("pool-kill", 4_000_000)


def test_worker_container_killed_mid_job_still_completes(http, auth, stack):
    """The whole worker is SIGKILLed: restarted by its policy, and its reaper queues the job again
    (its previous life's lease), before Redis's visibility timeout (25 s in the test stack)."""
    location = _running_job(http, auth, 4_000_000, "container-kill")
    container, pid = _main_pid(stack, "worker")
    restarts = stack.inspect(container)["RestartCount"]
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: stack.inspect(container)["RestartCount"] > restarts, within=60)
    done = poll_job(lambda: http.get(location).json(), within=150, every=0.5)
    assert done["state"] == "succeeded"
    assert done["attempts"] >= 2
    assert done["result"] == iterated_sha256("container-kill", 4_000_000)


def test_scale_to_three_replicas_all_answer(http, stack):
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=3", "api")
    try:
        assert len(stack.wait_healthy("api")) == 3
        migrations = stack.compose("ps", "-a", "-q", "migrate").stdout.split()
        assert len(migrations) == 1, "migrations must run once however many replicas"
        if stack.with_proxy:

            def all_seen():
                seen = {http.get("/whoami").json()["served_by"] for _ in range(30)}
                return len(seen) == 3

            wait_until(all_seen, within=30)
        else:
            for index in (1, 2, 3):
                port = stack.published_port("api", 8000, index=index)
                assert httpx.get(f"http://127.0.0.1:{port}/ready").status_code == 200
    finally:
        stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=1", "api")


def test_dump_and_restore_round_trip(http, auth, stack, tmp_path):
    """make dump, lose data, make restore FILE=: the data is back, and no stale cache hides it.
    (The pgBackRest path, make backup and make restore TIME=, is tests/e2e/full/test_backups.py.)"""
    kept = http.post("/items", json={"name": "in the dump"}, headers=auth).json()
    dump = tmp_path / "round-trip.dump"
    stack.make("dump", f"FILE={dump}")
    assert dump.stat().st_size > 1000

    http.delete(f"/items/{kept['id']}", headers=auth)
    later = http.post("/items", json={"name": "after the dump"}, headers=auth).json()
    assert http.get(f"/items/{kept['id']}").status_code == 404

    stack.make("restore", f"FILE={dump}")
    restored = http.get(f"/items/{kept['id']}")
    assert restored.status_code == 200
    assert restored.json()["name"] == "in the dump"
    assert http.get(f"/items/{later['id']}").status_code == 404
