"""make bench-instructions: what tracing costs the api, counted in instructions, not timed.

This VM's throughput drifts by 20% over minutes (docs/observability.md, Sampling), more than the
10% the default ratio may cost. Instructions do not drift: valgrind's callgrind counts those the
api process executes. The api (uvicorn, the kit's create_app, uvloop and httptools) runs on this
host against PostgreSQL, Redis and Jaeger in throwaway containers, and serves the cached item
read over HTTP keep-alive, tracing off, at the default TRACING_SAMPLE_RATIO and at 1. Each
setting runs twice side by side, with 0 and with REQUESTS requests after the same warm-up, so
start-up and shut-down cancel out. Instructions are not time (a cache miss costs more than an
add), so this complements the bench's timed tracing rows; it does not replace them.

Prints the table; writes nothing. Run from the repository root: `python -m bench.instructions`.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.phases.tracing import DEFAULT_RATIO, DEFAULT_RATIO_MAX_COST
from bench.stack import raise_on_sigterm
from core.settings import DEV_POSTGRES_APP_PASSWORD, DEV_POSTGRES_PASSWORD
from tests.support import ROOT
from tests.support.stack import compose_env, run, wait_until

REQUESTS = int(os.environ.get("BENCH_REQUESTS", "3000"))
WARMUP = 200
PREFIX = "kit-bench-instructions"
GOAL = 1 + DEFAULT_RATIO_MAX_COST  # of off's instructions
JAEGER_CONFIG = "/etc/jaeger/config.yaml"
_COLLECTED = re.compile(r"Collected : (\d+)")


def _published(container: str, port: int) -> str:
    out = run(["docker", "port", container, f"{port}/tcp"]).stdout
    return out.splitlines()[0].strip()


@contextmanager
def backing_services() -> Iterator[dict[str, str]]:
    """PostgreSQL (migrated, one item), Redis and Jaeger, each on a loopback port Docker picks;
    the api's environment to reach them. Removed on the way out."""
    jaeger_config = ROOT / "observability" / "jaeger" / "config.yaml"
    started = {
        "db": [
            "-e",
            "POSTGRES_USER=app",
            "-e",
            f"POSTGRES_PASSWORD={DEV_POSTGRES_PASSWORD}",
            "-e",
            "POSTGRES_DB=app",
            "-p",
            "127.0.0.1::5432",
            "postgres:17",
        ],
        "redis": ["-p", "127.0.0.1::6379", "redis:7"],
        "jaeger": [
            "-p",
            "127.0.0.1::4318",
            "-e",
            "JAEGER_MAX_TRACES=20000",
            "-v",
            f"{jaeger_config}:{JAEGER_CONFIG}:ro",
            "jaegertracing/jaeger:2",
            "--config",
            JAEGER_CONFIG,
        ],
    }
    names = [f"{PREFIX}-{name}" for name in started]
    run(["docker", "rm", "-f", *names], check=False)
    try:
        for name, args in started.items():
            run(["docker", "run", "-d", "--name", f"{PREFIX}-{name}", *args])
        db = _published(f"{PREFIX}-db", 5432)
        env = {
            "POSTGRES_HOST": db.rpartition(":")[0],
            "POSTGRES_PORT": db.rpartition(":")[2],
            "REDIS_URL": f"redis://{_published(f'{PREFIX}-redis', 6379)}/0",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{_published(f'{PREFIX}-jaeger', 4318)}",
            "LOG_LEVEL": "warning",
        }
        owner = {**env, "POSTGRES_PASSWORD": DEV_POSTGRES_PASSWORD}
        # Over TCP: the image's first, initialising server listens on its socket only.
        ready = ["docker", "exec", f"{PREFIX}-db", "pg_isready", "-h", "127.0.0.1", "-U", "app"]
        wait_until(lambda: run(ready, check=False).returncode == 0, within=60, every=1)
        _python(["-m", "api.migrate"], owner)
        _python(["-c", _SEED], owner)
        yield {**env, "POSTGRES_USER": "app_rw", "POSTGRES_PASSWORD": DEV_POSTGRES_APP_PASSWORD}
    finally:
        run(["docker", "rm", "-f", *names], check=False)


_SEED = """
from sqlalchemy import text
from core.settings import get_settings
from core.sync_engine import make_sync_engine
with make_sync_engine(get_settings()).begin() as c:
    c.execute(text("INSERT INTO items (name, price_cents) VALUES ('bench', 1)"))
"""


def _python(args: list[str], env: dict[str, str]) -> None:
    run([sys.executable, *args], env=compose_env(**env), timeout=300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def counted(env: dict[str, str], requests: int) -> int:
    """Instructions the api executed: start, WARMUP + `requests` cached reads, stop."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        log, output = Path(tmp) / "callgrind.log", Path(tmp) / "api.log"
        with output.open("w") as out:
            server = subprocess.Popen(
                [
                    "valgrind",
                    "--tool=callgrind",
                    "--callgrind-out-file=/dev/null",
                    f"--log-file={log}",
                    sys.executable,
                    "-m",
                    "uvicorn",
                    "api.main:create_app",
                    "--factory",
                    "--port",
                    str(port),
                    "--no-access-log",
                    "--loop",
                    "uvloop",
                    "--http",
                    "httptools",
                ],
                cwd=ROOT,
                env=compose_env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

        def serving() -> bool:
            if server.poll() is not None:
                raise RuntimeError(f"the api exited: {output.read_text()[-1000:]}")
            return httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200

        try:
            wait_until(serving, within=300, every=1)
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
                item = client.get("/items?limit=1").json()["items"][0]["id"]
                for _ in range(WARMUP + requests):
                    client.get(f"/items/{item}").raise_for_status()
        finally:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(timeout=300)
            except subprocess.TimeoutExpired:
                server.kill()
                raise
        match = _COLLECTED.search(log.read_text())
        if match is None:
            raise RuntimeError(f"callgrind printed no count: {log.read_text()[-500:]}")
        return int(match.group(1))


def per_request(env: dict[str, str]) -> float:
    """Instructions per cached read: REQUESTS more requests, less the same run without them."""
    with ThreadPoolExecutor(2) as pool:
        without = pool.submit(counted, env, 0)
        with_them = pool.submit(counted, env, REQUESTS)
        return (with_them.result() - without.result()) / REQUESTS


def main() -> None:
    if shutil.which("valgrind") is None:
        sys.exit("make bench-instructions needs valgrind (apt-get install valgrind)")
    raise_on_sigterm()  # a cancelled run still removes its containers
    default = f"TRACING_SAMPLE_RATIO={DEFAULT_RATIO} (default)"
    started = time.monotonic()
    with backing_services() as env:
        settings = {
            "off": {**env, "OTEL_EXPORTER_OTLP_ENDPOINT": ""},
            default: {**env, "TRACING_SAMPLE_RATIO": str(DEFAULT_RATIO)},
            "TRACING_SAMPLE_RATIO=1": {**env, "TRACING_SAMPLE_RATIO": "1"},
        }
        counts = {name: per_request(e) for name, e in settings.items()}
    base = counts["off"]
    print(
        f"Instructions per cached item read over HTTP, {REQUESTS} requests a setting "
        f"(the api process, callgrind; {round(time.monotonic() - started)} s):"
    )
    print("| tracing | instructions | of off |\n|---|---:|---:|")
    for name, count in counts.items():
        print(f"| {name} | {count / 1000:,.0f} k | {count / base:.3f} |")
    cost = counts[default] / base
    verdict = "met" if cost <= GOAL else "NOT MET"
    print(f"Goal: the default ratio at most {GOAL:.2f} of off's instructions: {verdict}.")
    sys.exit(0 if cost <= GOAL else 1)


if __name__ == "__main__":
    main()
