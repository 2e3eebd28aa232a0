"""Drive the kit's own compose stack from the tests, as a user would: build, up, kill, restart.

The test project is separate from a developer's (`-p kit-test`), publishes nothing but loopback
ports, and respects this machine's limits (NOFILE_LIMIT no higher than the daemon allows).

Also the one home of the helpers the tests and the benchmark (bench/) share: running a command,
waiting for a condition or a job, finding PID 1's children in a container. Importing this module
starts nothing: only calls do (Stack() itself asks Docker whether the Traefik image is there).
"""

from __future__ import annotations

import json
import os
import resource
import shlex
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support import ROOT

PROJECT = os.environ.get("KIT_TEST_PROJECT", "kit-test")
DB_PORT = int(os.environ.get("KIT_TEST_DB_PORT", "55432"))
REDIS_PORT = int(os.environ.get("KIT_TEST_REDIS_PORT", "56379"))
HTTP_PORT = int(os.environ.get("KIT_TEST_HTTP_PORT", "58080"))
HTTPS_PORT = int(os.environ.get("KIT_TEST_HTTPS_PORT", "58443"))
TRAEFIK_IMAGE = "traefik:v3.6"


def _nofile_limit() -> str:
    """The compose default (65535) is right for servers; an engine with a lower hard limit (20000
    on these CI machines) refuses to start containers that ask for more."""
    if "NOFILE_LIMIT" in os.environ:
        return os.environ["NOFILE_LIMIT"]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return str(65535 if hard == resource.RLIM_INFINITY else min(65535, hard))


def compose_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        # The test process's own settings must not leak into the stack's containers, nor a
        # shell's into the settings make bench passes through (bench/compose.bench.yaml).
        if not k.startswith(
            (
                "POSTGRES_",
                "REDIS_",
                "CELERY_",
                "WEB_CONCURRENCY",
                "JWT_",
                "DB_",
                "LOG_LEVEL",
                "GUNICORN_",
                "PRELOAD_APP",
                "KEEP_ALIVE",
                "MAX_REQUESTS",
                "OTEL_",
                "TRACING_",
                "SENTRY_",
            )
        )
    }
    env.update(
        NOFILE_LIMIT=_nofile_limit(),
        HTTP_PORT=str(HTTP_PORT),
        HTTPS_PORT=str(HTTPS_PORT),
        COMPOSE_PROGRESS="plain",
        COMPOSE_BAKE="false",
    )
    env.update(extra)
    return env


class CommandFailed(RuntimeError):
    """A command exited non-zero; the message ends with the tails of its stdout and stderr."""


def run(
    args: list[str],
    *,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 600,
) -> subprocess.CompletedProcess[str]:
    """The one way tests and the benchmark run a command: output captured as text, in cwd (default
    the repository root), with env (default compose_env(), the test stack's environment).
    check: raise CommandFailed, with the tails of stdout and stderr, if it exits non-zero."""
    proc = subprocess.run(
        args,
        cwd=ROOT if cwd is None else cwd,
        env=compose_env() if env is None else env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise CommandFailed(
            f"{shlex.join(map(str, args))} exited {proc.returncode}\n"
            f"{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def make(
    *target: str,
    cwd: Path | str | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float = 900,
) -> subprocess.CompletedProcess[str]:
    """`make TARGET [NAME=value...]` as a user types it, through run() (same cwd, env and check);
    the default timeout leaves room for a deploy's builds and health checks."""
    return run(
        ["make", "--no-print-directory", *target], cwd=cwd, env=env, check=check, timeout=timeout
    )


# The SQL is psql's argument, not part of the shell's script: no quoting to get wrong.
PSQL = 'psql -XAtq -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "$1"'


def psql(
    compose: list[str], sql: str, *, env: dict[str, str] | None = None, timeout: float = 600
) -> str:
    """SQL run by psql in the db container of `compose` (a `docker compose ...` command), as the
    database's owner role; its output, unaligned and without headers, stripped."""
    args = [*compose, "exec", "-T", "db", "sh", "-c", PSQL, "sh", sql]
    return run(args, env=env, timeout=timeout).stdout.strip()


T = TypeVar("T")


def wait_until(
    condition: Callable[[], T],
    within: float,
    every: float = 0.5,
    retry_on: tuple[type[Exception], ...] = (httpx.HTTPError, KeyError),
) -> T:
    """Call condition every `every` seconds until it returns something true, and return that; an
    exception in retry_on counts as not yet. TimeoutError after `within` seconds."""
    deadline = time.monotonic() + within
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except retry_on as exc:
            last_error = exc
        time.sleep(every)
    raise TimeoutError(f"not true within {within}s (last error: {last_error!r})")


# Python for `python -c` in a container, defining pid1_children(): the pids whose parent is PID 1
# (gunicorn's workers, Celery's pool processes; `docker exec` processes have parent 0). The fields
# of /proc/<pid>/stat are read after the command name's closing parenthesis (a name may hold
# spaces), and a process that exits meanwhile is skipped.
PID1_CHILDREN = (
    "import os\n"
    "def pid1_children():\n"
    "    for p in filter(str.isdigit, os.listdir('/proc')):\n"
    "        try: stat = open(f'/proc/{p}/stat').read()\n"
    "        except OSError: continue\n"
    "        if stat.rsplit(')', 1)[1].split()[1] == '1': yield int(p)\n"
)


def image_exists(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref], check=False).returncode == 0


@dataclass
class Stack:
    project: str = PROJECT
    files: tuple[str, ...] = ("compose.yaml", "tests/compose.test.yaml")
    with_proxy: bool = field(default_factory=lambda: image_exists(TRAEFIK_IMAGE))
    env: dict[str, str] = field(default_factory=dict)

    @property
    def command(self) -> list[str]:
        """`docker compose` for this project and its files."""
        return [
            "docker",
            "compose",
            "-p",
            self.project,
            *(a for f in self.files for a in ("-f", f)),
        ]

    def compose(
        self, *args: str, check: bool = True, timeout: float = 600, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return run(
            [*self.command, *args],
            check=check,
            env=compose_env(**{**self.env, **env}),
            timeout=timeout,
        )

    def make(self, *target: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        """make TARGET, its compose commands run on this stack (COMPOSE=...)."""
        compose = f"COMPOSE={shlex.join(self.command)}"
        return make(*target, compose, env=compose_env(**self.env), timeout=timeout)

    def psql(self, sql: str, timeout: float = 600) -> str:
        return psql(self.command, sql, env=compose_env(**self.env), timeout=timeout)

    @property
    def services(self) -> list[str]:
        # backup: without it no stanza exists, every WAL hand-over fails and /ready reports the
        # stalled archive, as it would for a user whose backup service died.
        base = ["api", "worker", "scheduler", "backup"]
        return ["proxy", *base] if self.with_proxy else base

    def up(self, *extra: str, build: bool = True) -> None:
        args = ["up", "-d", "--wait", "--wait-timeout", "240"]
        if build:
            args.append("--build")
        self.compose(*args, *extra, *self.services)

    def down(self) -> None:
        self.compose("down", "-v", "--remove-orphans", "--timeout", "10", check=False)

    def container_ids(self, service: str) -> list[str]:
        out = self.compose("ps", "-q", service).stdout.split()
        return out

    def inspect(self, container: str) -> dict[str, Any]:
        inspected: list[dict[str, Any]] = json.loads(run(["docker", "inspect", container]).stdout)
        return inspected[0]

    def health(self, container: str) -> str:
        state = self.inspect(container)["State"]
        return str(state.get("Health", {}).get("Status", state["Status"]))

    def wait_healthy(self, service: str, timeout: float = 120) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.container_ids(service)
            if ids and all(self.health(c) == "healthy" for c in ids):
                return ids
            time.sleep(1)
        raise TimeoutError(f"{service} not healthy within {timeout}s: {self.logs(service)}")

    def logs(self, service: str, tail: int = 60) -> str:
        return self.compose("logs", "--no-color", "--tail", str(tail), service, check=False).stdout

    def published_port(self, service: str, port: int, index: int = 1) -> int:
        out = self.compose("port", "--index", str(index), service, str(port)).stdout.strip()
        return int(out.rsplit(":", 1)[1])

    def exec_python(self, service: str, code: str) -> str:
        return self.compose("exec", "-T", service, "python", "-c", code).stdout


def require(condition: bool, missing: str) -> None:
    """A part the tests need: in CI (CI=true) its absence fails the run, since CI must provide
    it (.ci/run installs sshd and builds the traefik stand-in); elsewhere the test is skipped,
    saying why."""
    import pytest

    if condition:
        return
    if os.environ.get("CI"):
        pytest.fail(f"CI lacks {missing}: .ci/run must provide it", pytrace=False)
    pytest.skip(f"not exercised here: no {missing}")


def container_url(container: str, published: str | None = None, port: int = 8000) -> str:
    """The container's own address: the host reaches bridge networks directly. A published
    loopback port goes through docker-proxy, a userland copy that cost about a fifth of the
    machine here and that production traffic never takes (Traefik reaches the api over the edge
    network); it also accepts a connection when the container is gone and then drops it, so a
    refused connection would look like a lost request. Where the address is not reachable
    (Docker Desktop), the published port if one is given, else an error."""
    addresses = run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        ]
    ).stdout.split()
    for address in addresses:
        url = f"http://{address}:{port}"
        try:
            httpx.get(f"{url}/health", timeout=1)
            return url
        except httpx.HTTPError:
            continue
    if published is None:
        raise RuntimeError(f"container {container} is not reachable at {addresses} from here")
    return published
