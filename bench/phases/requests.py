"""The request rounds: every request row, kit and baselines, in alternating rounds, with each
system under test's idle CPU measured first. Importing this module starts nothing."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

from bench import figures
from bench.config import (
    BARE_CONTAINER,
    GROUPS,
    IDLE_SECONDS,
    PEER_CONTAINER,
    PROXY_HEADERS,
    SEED_ITEMS,
    TUTORIAL_CONTAINER,
    WARMUP_SECONDS,
    log,
)
from bench.containers import container_name, cpu_counter_files, processes
from bench.figures import Wrk
from bench.stack import BenchStack
from bench.wrk import host_busy, run_wrk, wrk


@dataclass(frozen=True)
class Seeded:
    url: str  # the api container's own address
    first_id: int
    token: str


def seed(stack: BenchStack) -> Seeded:
    log(f"seeding {SEED_ITEMS} items")
    first_id = stack.seed_items()
    token = stack.token()
    url = stack.api_url()
    httpx.get(f"{url}/items/{first_id}")  # cached from here on
    return Seeded(url=url, first_id=first_id, token=token)


class RowFailed(RuntimeError):
    """A row did not measure what its name says (e.g. the tutorial ran more than one process)."""


@dataclass(frozen=True)
class Target:
    """One request row: what wrk sends where, and which system serves it."""

    system: str  # kit, kit via proxy, tutorial, template peer, bare ASGI
    url: str
    script: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # The system under test's containers, for its idle CPU (the CPU column is the whole host's).
    containers: tuple[str, ...] = ()
    # The server's container, whose processes are counted during the row.
    server: str | None = None
    # If set, the row fails unless the server container has exactly this many processes.
    processes: int | None = None
    kit: bool = False  # the kit's own row: no failed request allowed, db connections counted
    before: Callable[[], None] | None = None


def targets(stack: BenchStack, seeded: Seeded, urls: dict[str, str]) -> dict[str, Target]:
    """Every request row, by name. Kit rows are served by the kit's containers (api, worker, db,
    redis; the proxy and its socket proxy too through the proxy); the peer by its own container
    and the db it shares with the kit."""
    kit_direct = tuple(
        c for service in ("api", "worker", "db", "redis") for c in stack.container_ids(service)
    )
    kit_proxied = (
        *kit_direct,
        *(c for service in ("proxy", "socket-proxy") for c in stack.container_ids(service)),
    )
    api = stack.container_ids("api")[0]
    db = tuple(stack.container_ids("db"))
    first = seeded.first_id
    walk = {"WALK_FIRST": str(first), "WALK_SPAN": str(SEED_ITEMS)}
    item, page = f"/items/{first}", f"/items?limit=20&after={first}"

    def kit(
        path: str,
        script: str | None = None,
        env: dict[str, str] | None = None,
        before: Callable[[], None] | None = None,
    ) -> Target:
        return Target(
            "kit",
            f"{seeded.url}{path}",
            script=script,
            env=env or {},
            containers=kit_direct,
            server=api,
            kit=True,
            before=before,
        )

    def proxied(path: str) -> Target:
        return Target(
            "kit via proxy",
            f"{stack.proxy_url()}{path}",
            headers=PROXY_HEADERS,
            containers=kit_proxied,
            server=api,
            kit=True,
        )

    def peer(path: str, script: str | None = None, env: dict[str, str] | None = None) -> Target:
        return Target(
            "template peer",
            f"{urls['peer']}{path}",
            script=script,
            env=env or {},
            containers=(PEER_CONTAINER, *db),
            server=PEER_CONTAINER,
        )

    rows = {
        "health": kit("/health"),
        "health_via_proxy": proxied("/health"),
        "item_cached": kit(item),
        "item_cached_via_proxy": proxied(item),
        # Ids that are not cached: the cache is flushed before the row, and wrk walks 50,000 ids.
        "item_db": kit("/", script="walk_items.lua", env=walk, before=stack.flush_cache),
        "items_page": kit(page),
        "create_item": kit("/items", script="create_item.lua", env={"BENCH_TOKEN": seeded.token}),
    }
    if "bare" in urls:
        rows["bare_health"] = Target(
            "bare ASGI",
            f"{urls['bare']}/health",
            containers=(BARE_CONTAINER,),
            server=BARE_CONTAINER,
        )
    if "tutorial" in urls:
        # The tutorial keeps its items in a list: its item read is its whole work.
        rows["tutorial_item"] = Target(
            "tutorial",
            f"{urls['tutorial']}/items/1",
            containers=(TUTORIAL_CONTAINER,),
            server=TUTORIAL_CONTAINER,
            processes=1,
        )
    if "peer" in urls:
        rows["peer_item"] = peer("/", script="walk_items.lua", env=walk)
        rows["peer_page"] = peer(page)
        rows["peer_create"] = peer("/items", script="create_item.lua")
    return rows


@dataclass(frozen=True)
class Sample:
    """One row in one round."""

    round: int
    position: int  # its place in its group that round, from 0
    wrk: Wrk
    # The whole host's CPU over the row less wrk's own; None: no /proc/stat here.
    cpu_usec: int | None
    processes: int | None  # in the server's container, during the row
    db_connections_opened: int | None  # kit rows: connections PostgreSQL accepted meanwhile
    wrk_cpu_usec: int | None = None  # wrk's own CPU over the row, left out of cpu_usec

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_usec is None or not self.wrk.requests:
            return None
        return self.cpu_usec / self.wrk.requests


def measure_row(
    stack: BenchStack, name: str, t: Target, round_number: int, position: int
) -> Sample:
    """One row: anything it needs first (a cache flush), then wrk with the host's CPU read right
    before it starts and right after it exits, and nothing else run between the two readings but
    one process count in the server's container."""
    if t.before is not None:
        t.before()
    sessions = stack.db_sessions() if t.kit else None
    counted: list[int] = []
    server = t.server

    def count() -> None:
        if server is not None:
            counted.append(processes(server))

    loaded = run_wrk(t.url, script=t.script, headers=t.headers, env=t.env, during=count)
    opened = None
    if sessions is not None:
        opened = stack.db_sessions() - sessions - 1  # less the one psql opened to ask
    seen = counted[0] if counted else None
    if t.processes is not None and seen != t.processes:
        raise RowFailed(
            f"{name}: {seen} processes in {server} during the row, {t.processes} expected"
        )
    return Sample(
        round_number, position, loaded.wrk, loaded.cpu_usec, seen, opened, loaded.wrk_cpu_usec
    )


@dataclass(frozen=True)
class Idle:
    """CPU while nothing is sent, ms of CPU per second: what the rows' CPU column holds besides
    the requests (health checks, Celery's heartbeats, the reaper), which matters only where a
    row serves few requests."""

    host: float | None  # the whole host's, what the CPU column counts
    by_system: dict[str, float | None]  # each system under test's containers
    by_container: dict[str, float | None]


def idle_cpu(rows: dict[str, Target], names: tuple[str, ...]) -> Idle:
    """The host's CPU and each system under test's (its containers' counters) over IDLE_SECONDS
    with nothing sent to any of them."""
    systems = {rows[name].system: rows[name].containers for name in names}
    containers = sorted({c for cs in systems.values() for c in cs})
    files = {c: cpu_counter_files(c) for c in containers}
    before = {c: figures.read_cpu_counter(f) for c, f in files.items()}
    host_before = host_busy()
    time.sleep(IDLE_SECONDS)
    host_after = host_busy()
    after = {c: figures.read_cpu_counter(f) for c, f in files.items()}
    used: dict[str, float | None] = {}
    for c in containers:
        start, end = before[c], after[c]
        used[c] = None if start is None or end is None else (end - start) / IDLE_SECONDS / 1000
    by_system: dict[str, float | None] = {}
    for system, cs in systems.items():
        values = [used[c] for c in cs]
        by_system[system] = (
            None if any(v is None for v in values) else round(sum(v or 0.0 for v in values), 1)
        )
    by_name = {container_name(c): None if v is None else round(v, 1) for c, v in used.items()}
    host = None
    if host_before is not None and host_after is not None:
        usec = figures.cpu_beside_load(host_before, host_after, 0, os.sysconf("SC_CLK_TCK"))
        host = round(usec / IDLE_SECONDS / 1000, 1)
    return Idle(host, by_system, by_name)


def warm_up(rows: dict[str, Target], names: tuple[str, ...]) -> None:
    """Each row once, unmeasured: pools filled, code paths and pages warm, before round 1."""
    for name in names:
        t = rows[name]
        if t.before is not None:
            t.before()
        wrk(t.url, script=t.script, headers=t.headers, env=t.env, seconds=WARMUP_SECONDS)


def request_rounds(
    stack: BenchStack, rows: dict[str, Target], groups: tuple[str, ...], rounds: int
) -> dict[str, list[Sample]]:
    """Every chosen group's rows, `rounds` times. In round r a group starts at its row r (mod
    its size): each row takes each place in turn, so no row always runs first or last."""
    samples: dict[str, list[Sample]] = {name: [] for g in groups for name in GROUPS[g]}
    for r in range(rounds):
        for g in groups:
            names = GROUPS[g]
            k = r % len(names)
            for position, name in enumerate(names[k:] + names[:k]):
                sample = measure_row(stack, name, rows[name], r + 1, position)
                samples[name].append(sample)
                w = sample.wrk
                cpu = sample.cpu_us_per_request
                log(
                    f"round {r + 1}/{rounds} {name}: {w.rps} req/s, p99 {w.p99_ms} ms, "
                    f"{'-' if cpu is None else round(cpu)} µs CPU/request, "
                    f"{w.socket_errors} socket errors, {w.non_2xx} non-2xx, "
                    f"{sample.processes} processes"
                )
    return samples
