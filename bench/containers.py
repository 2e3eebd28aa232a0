"""What the bench asks Docker about a container or an image, from this host: its CPU counter, its
processes, its address on a network, an image's size, the engine's CPUs; and waiting for an
HTTP answer. Importing this module starts nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from bench import figures
from tests.support.stack import run, wait_until


def cpu_counter_files(container: str) -> list[Path]:
    """Where the container's CPU counter is on this host (its PID 1's cgroup)."""
    pid = run(["docker", "inspect", "-f", "{{.State.Pid}}", container]).stdout.strip()
    try:
        return figures.cpu_counter_files(Path(f"/proc/{pid}/cgroup").read_text())
    except OSError:  # the engine runs in a VM (Docker Desktop): no counter from here
        return []


def engine_cpus() -> int:
    """CPUs the Docker engine sees: what a Go program's default GOMAXPROCS is there."""
    return int(run(["docker", "info", "-f", "{{.NCPU}}"]).stdout.strip())


def processes(container: str) -> int:
    """Processes in the container now, from the host (`docker top`: nothing runs inside it)."""
    top = run(["docker", "top", container, "-eo", "pid,ppid,comm"]).stdout
    return figures.count_processes(top)


def network_address(inspected: str, network: str) -> str | None:
    """The container's IPv4 address on a network, from `docker inspect`'s JSON of it; None if it
    is not on that network (or has no address there)."""
    networks = json.loads(inspected)[0]["NetworkSettings"]["Networks"] or {}
    address = (networks.get(network) or {}).get("IPAddress")
    return str(address) if address else None


def address_on(container: str, network: str) -> str | None:
    """The container's address on a network, asked of the engine."""
    return network_address(run(["docker", "inspect", container]).stdout, network)


def container_name(container: str) -> str:
    return run(["docker", "inspect", "-f", "{{.Name}}", container]).stdout.strip().lstrip("/")


def image_mib(ref: str) -> float:
    size = run(["docker", "image", "inspect", "-f", "{{.Size}}", ref]).stdout
    return round(int(size) / 2**20, 1)


def wait_http(url: str, within: float = 60, headers: dict[str, str] | None = None) -> float:
    """Seconds until url answered 200."""
    started = time.monotonic()
    wait_until(
        lambda: httpx.get(url, timeout=1, verify=False, headers=headers).status_code == 200,
        within=within,
        every=0.05,
        retry_on=(httpx.HTTPError,),
    )
    return time.monotonic() - started
