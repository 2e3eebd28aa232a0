"""The api image on managed platforms, tried here on the test stack's real PostgreSQL, Redis and
Celery worker (docs/platforms.md):

- Cloud Run style: the api image as it is, one CPU, PORT set by the platform, SIGTERM with a
  10 s grace period, no Traefik and no Compose.
- AWS Lambda: the image's `lambda` target through AWS's runtime interface client, driven by a
  Lambda Runtime API stand-in in this process (the protocol is four HTTP endpoints), with API
  Gateway HTTP API (v2) and REST (v1) events, and events that are not HTTP requests.

Both reach the stack over its `testnet` network (db, redis by name), as a platform reaches its
database over a VPC, and queue jobs the stack's worker runs: the broker URL is the only coupling.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.lambda_runtime import RuntimeAPI
from tests.support.load import cycle, get, slow_post, steady_load
from tests.support.stack import PID1_CHILDREN, ROOT, Stack, run, wait_until

# What the platforms' containers get: the stack's services by name, the app's least-privileged
# role, the development secrets of the test stack (ENVIRONMENT=test).
PLATFORM_ENV = {
    "ENVIRONMENT": "test",
    "POSTGRES_HOST": "db",
    "POSTGRES_USER": "app_rw",
    "POSTGRES_PASSWORD": "app_rw",
    "REDIS_URL": "redis://redis:6379/0",
}
CLOUD_RUN_GRACE = 10  # seconds between SIGTERM and SIGKILL on Cloud Run
CLOUD_RUN_ENV = {
    "PORT": "8080",
    # Inside Cloud Run's grace: in-flight requests get 8 s; the platform has already stopped
    # sending new ones, so a long drain on keep-alive connections buys nothing.
    "GUNICORN_GRACEFUL_TIMEOUT": "8",
    "GUNICORN_DRAIN_SECONDS": "1",
}


def _network(stack: Stack) -> str:
    return f"{stack.project}_testnet"


def _image(stack: Stack, service: str) -> str:
    return stack.inspect(stack.container_ids(service)[0])["Config"]["Image"]


def _docker_run(stack: Stack, image: str, env: dict[str, str], *extra: str) -> str:
    args = ["docker", "run", "-d", "--network", _network(stack)]
    for name, value in env.items():
        args += ["-e", f"{name}={value}"]
    return run([*args, *extra, image]).stdout.strip()


def _address(container: str, network: str) -> str:
    return run([
        "docker", "inspect", "-f",
        f'{{{{(index .NetworkSettings.Networks "{network}").IPAddress}}}}', container,
    ]).stdout.strip()  # fmt: skip


# ------------------------------------------------------------------------- Cloud Run style --


@pytest.fixture
def cloud_run(stack) -> Iterator[tuple[str, str]]:
    """The api image with one CPU and PORT=8080, as Cloud Run starts it: (container, base URL)."""
    container = _docker_run(
        stack, _image(stack, "api"), PLATFORM_ENV | CLOUD_RUN_ENV, "--cpus", "1"
    )
    try:
        base = f"http://{_address(container, _network(stack))}:8080"
        wait_until(lambda: httpx.get(f"{base}/ready", timeout=2).status_code == 200, within=60)
        yield container, base
    finally:
        run(["docker", "rm", "-f", container], check=False)


def test_cloud_run_mode_one_cpu_one_process_port_and_severity(cloud_run, auth):
    container, base = cloud_run
    workers = run([
        "docker", "exec", container, "python", "-c",
        PID1_CHILDREN + "print(len(list(pid1_children())))",
    ]).stdout.strip()  # fmt: skip
    assert workers == "1", "WEB_CONCURRENCY from the container's one CPU, not the host's"
    # A job queued from the platform runs on the stack's worker: the broker is the coupling.
    created = httpx.post(f"{base}/jobs", json={"cost": 1000, "seed": "cloud-run"}, headers=auth)
    assert created.status_code == 202, created.text
    location = created.headers["location"]
    job = wait_until(
        lambda: (body := httpx.get(f"{base}{location}").json())["state"] == "succeeded" and body,
        within=60,
    )
    assert job["result"]
    lines = [
        json.loads(line)
        for line in run(["docker", "logs", container]).stdout.splitlines()
        if line.startswith("{")
    ]
    assert lines and all(line["severity"] == line["level"] for line in lines)
    assert {"INFO"} <= {line["severity"] for line in lines}


def test_cloud_run_sigterm_finishes_in_flight_requests_within_the_grace(cloud_run, auth):
    container, base = cloud_run
    requests = cycle(
        get("/items?limit=5"),
        slow_post("/items", {"name": "uploaded through a stop"}, seconds=2.0, **auth),
    )
    with steady_load(base, requests, connections=8, rate=40) as load:
        time.sleep(2)
        stopped = time.monotonic()
        run(["docker", "kill", "--signal", "TERM", container])
        wait_until(
            lambda: (
                run(["docker", "inspect", "-f", "{{.State.Running}}", container]).stdout.strip()
                == "false"
            ),
            within=CLOUD_RUN_GRACE + 5,
            every=0.2,
        )
        exited_after = time.monotonic() - stopped
    sent_before = load.between(0, stopped)
    assert exited_after < CLOUD_RUN_GRACE, f"still running {exited_after:.1f} s after SIGTERM"
    assert load.failures(sent_before) == [], load.kinds(sent_before)
    assert any(o.method == "POST" and o.ok for o in sent_before), "a slow upload was in flight"
    status = run(["docker", "inspect", "-f", "{{.State.ExitCode}}", container]).stdout.strip()
    assert status == "0", "a clean exit, not a kill"


# ---------------------------------------------------------------------------- AWS Lambda --


def _gateway(network: str) -> str:
    return run([
        "docker", "network", "inspect", "-f", "{{(index .IPAM.Config 0).Gateway}}", network,
    ]).stdout.strip()  # fmt: skip


@pytest.fixture(scope="module")
def lambda_image(stack) -> str:
    run(["docker", "compose", "-f", str(ROOT / "compose.platforms.yaml"), "build", "lambda"])
    return "fastapi-kit-lambda:dev"


@pytest.fixture
def lambda_function(stack, lambda_image) -> Iterator[RuntimeAPI]:
    runtime = RuntimeAPI(_gateway(_network(stack)))
    threading.Thread(target=runtime.serve_forever, daemon=True).start()
    host, port = runtime.server_address[:2]
    container = _docker_run(
        stack, lambda_image, PLATFORM_ENV | {"AWS_LAMBDA_RUNTIME_API": f"{host}:{port}"}
    )
    try:
        wait_until(lambda: runtime.first_poll is not None, within=60, every=0.1)
        yield runtime
    finally:
        run(["docker", "rm", "-f", container], check=False)
        runtime.shutdown()
        runtime.server_close()


def http_api_event(method: str, path: str, body: Any = None, **headers: str) -> dict[str, Any]:
    """An API Gateway HTTP API (payload format 2.0) event."""
    path, _, query = path.partition("?")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "headers": {"host": "abc.execute-api.eu-west-1.amazonaws.com", **headers}
        | ({"content-type": "application/json"} if body is not None else {}),
        "requestContext": {
            "accountId": "0",
            "apiId": "abc",
            "domainName": "abc.execute-api.eu-west-1.amazonaws.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "test",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": "$default",
            "stage": "$default",
            "time": "01/Dec/2026:00:00:00 +0000",
            "timeEpoch": int(time.time() * 1000),
        },
        "body": json.dumps(body) if body is not None else None,
        "isBase64Encoded": False,
    }


def rest_api_event(method: str, path: str) -> dict[str, Any]:
    """An API Gateway REST API (payload format 1.0) event."""
    return {
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": method,
        "headers": {"Host": "abc.execute-api.eu-west-1.amazonaws.com"},
        "multiValueHeaders": {"Host": ["abc.execute-api.eu-west-1.amazonaws.com"]},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": {"proxy": path.lstrip("/")},
        "stageVariables": None,
        "requestContext": {
            "resourcePath": "/{proxy+}",
            "httpMethod": method,
            "path": f"/prod{path}",
            "stage": "prod",
            "requestId": str(uuid.uuid4()),
            "identity": {"sourceIp": "203.0.113.7"},
        },
        "body": None,
        "isBase64Encoded": False,
    }


def _http(runtime: RuntimeAPI, event: dict[str, Any]) -> tuple[int, Any]:
    kind, answer = runtime.invoke(event)
    assert kind == "response", answer
    body = answer["body"]
    return answer["statusCode"], json.loads(body) if body else None


def test_lambda_answers_http_api_and_rest_events_on_the_real_stack(lambda_function, auth):
    runtime = lambda_function
    status, created = _http(
        runtime, http_api_event("POST", "/items", {"name": "from lambda"}, **_lower(auth))
    )
    assert status == 201, created
    status, item = _http(runtime, http_api_event("GET", f"/items/{created['id']}"))
    assert (status, item["name"]) == (200, "from lambda")
    status, page = _http(runtime, http_api_event("GET", "/items?limit=1"))
    assert status == 200 and len(page["items"]) == 1
    status, ready = _http(runtime, rest_api_event("GET", "/ready"))
    assert (status, ready["status"]) == (200, "ready")
    # Invalid input: the app's own 422, as behind any other server.
    status, invalid = _http(runtime, http_api_event("POST", "/items", {"name": ""}, **_lower(auth)))
    assert status == 422, invalid
    # A job queued from Lambda, run by the stack's worker.
    status, job = _http(
        runtime, http_api_event("POST", "/jobs", {"cost": 1000, "seed": "lambda"}, **_lower(auth))
    )
    assert status == 202, job
    finished = wait_until(
        lambda: (
            (b := _http(runtime, http_api_event("GET", f"/jobs/{job['id']}"))[1])["state"]
            == "succeeded"
            and b
        ),
        within=60,
    )
    assert finished["result"]
    assert runtime.init_errors == []


def test_lambda_answers_a_bad_event_with_400_and_keeps_serving(lambda_function):
    runtime = lambda_function
    for event in (
        {"not": "an http event"},
        {"version": "2.0", "requestContext": {}},  # claims to be an HTTP API event
        ["a", "list"],
    ):
        kind, answer = runtime.invoke(event)
        assert kind == "response", answer  # not an invocation error Lambda would retry
        assert answer["statusCode"] == 400
        assert "not an API Gateway HTTP event" in json.loads(answer["body"])["detail"]
    status, health = _http(runtime, http_api_event("GET", "/health"))
    assert (status, health) == (200, {"status": "ok"})


def _lower(headers: dict[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}
