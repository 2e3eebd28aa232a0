"""The record of a run: the machine it ran on, where the load went, the commit and command, and
what the images held. Importing this module starts nothing."""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shlex
import subprocess
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.config import BASE_IMAGE, CONNECTIONS, IMAGES, PROJECT, SECONDS
from bench.stack import BenchStack
from tests.support.stack import run


@dataclass(frozen=True)
class Machine:
    cpus: int | None
    cpu: str
    memory_gib: float | None
    kernel: str
    docker_engine: str
    cgroup: str  # where a container's own CPU figure comes from (Traefik's, the idle CPU)
    date: str
    wrk: str
    target: str
    load_average_before: tuple[float, float, float]
    # Containers of other projects on the engine at the start: on a shared machine, a sign of
    # noise the figures cannot show.
    other_containers: int


def cgroup_kind() -> str:
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "cgroup v2 cpu.stat usage_usec"
    if Path("/sys/fs/cgroup/unified").is_dir():
        return "cgroup v2 cpu.stat usage_usec (hybrid host's unified mount)"
    return "cgroup v1 cpuacct.usage"


def machine(
    load_average_before: tuple[float, float, float], other_containers: int, target: str
) -> Machine:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    engine = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    return Machine(
        cpus=os.cpu_count(),
        cpu=cpu.group(1) if cpu else platform.processor(),
        memory_gib=round(int(mem.group(1)) / 2**20, 1) if mem else None,
        kernel=platform.release(),
        docker_engine=engine,
        cgroup=cgroup_kind(),
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        wrk=f"-t2 -c{CONNECTIONS} -d{SECONDS}s",
        target=target,
        load_average_before=(
            round(load_average_before[0], 2),
            round(load_average_before[1], 2),
            round(load_average_before[2], 2),
        ),
        other_containers=other_containers,
    )


def load_target(proxy_urls: Collection[str]) -> str:
    """Where wrk sent the load in this run, from the proxy URLs the proxy rows used (the stack
    decides each the first time a row asks, so this is read after the rows)."""
    containers = "container addresses on their Docker networks"
    if not proxy_urls:
        return containers
    if not any(url.startswith("https://127.0.0.1:") for url in proxy_urls):
        return f"{containers}, Traefik's too (no docker-proxy)"
    # The edge network is out of reach (Docker Desktop): so are the api's and the baselines'.
    return "published loopback ports, through docker-proxy: container addresses are out of reach"


def other_containers() -> int:
    """Running containers that are not this bench's (its stack and its baselines)."""
    names = run(["docker", "ps", "--format", "{{.Names}}"]).stdout.split()
    return len([n for n in names if not n.startswith(PROJECT)])


@dataclass(frozen=True)
class RunInfo:
    commit: str
    uncommitted_changes: bool
    command: str
    rounds: int
    groups: tuple[str, ...]
    phases: tuple[str, ...]
    # Each public image reference: whether it was a local stand-in (its `standin.for` label),
    # and what runs inside, asked of the running containers.
    images: dict[str, dict[str, Any]]


def git_commit() -> tuple[str, bool]:
    commit = run(["git", "rev-parse", "HEAD"], check=False).stdout.strip() or "unknown"
    dirty = run(["git", "status", "--porcelain", "--untracked-files=no"], check=False).stdout
    return commit, bool(dirty.strip())


def command_line() -> str:
    names = ("BENCH_ROUNDS", "BENCH_SECONDS", "BENCH_CONNECTIONS", "BENCH_ROWS", "BENCH_PHASES")
    settings = {k: v for k, v in sorted(os.environ.items()) if k in names}
    target = "make bench-publish" if os.environ.get("BENCH_PUBLISH") == "1" else "make bench"
    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in settings.items()), target])


def first_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def what_is_inside(stack: BenchStack) -> dict[str, str]:
    """The versions the stack's containers actually run, asked of them (before any row)."""

    def in_service(service: str, *command: str) -> str:
        return first_line(stack.compose("exec", "-T", service, *command, check=False))

    redis_info = stack.compose("exec", "-T", "redis", "redis-cli", "INFO", "server", check=False)
    redis = re.search(r"redis_version:(\S+)", redis_info.stdout)
    python = in_service("api", "python", "-c", "import platform; print(platform.python_version())")
    traefik = in_service("proxy", "traefik", "version").replace("Version:", "Traefik")
    return {
        BASE_IMAGE: "Python " + python,
        "postgres:17": "PostgreSQL " + stack.psql("SHOW server_version"),
        "redis:7": f"Redis {redis.group(1) if redis else 'unknown'}",
        "traefik:v3.6": " ".join(traefik.split()),
        "haproxy:3.2-alpine": in_service("socket-proxy", "haproxy", "-v"),
        "ghcr.io/astral-sh/uv:0.9.5": "uv (build stage only)",
    }


def image_record(stack: BenchStack) -> dict[str, dict[str, Any]]:
    inside = what_is_inside(stack)
    record = {}
    for ref in IMAGES:
        labels = run(
            ["docker", "image", "inspect", "-f", "{{json .Config.Labels}}", ref], check=False
        ).stdout.strip()
        stand_in = "standin.for" in (json.loads(labels) or {}) if labels.startswith("{") else False
        record[ref] = {"stand_in": stand_in, "inside": inside.get(ref, "unknown")}
    return record
