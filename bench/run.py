"""make bench: throughput, latency and CPU per request of the kit against what users would run
instead, each measured next to the kit row it is divided into, in alternating rounds; then
tuning, scaling and operations figures.

Load comes from wrk on this host, to the containers' own addresses. Every request row runs
BENCH_ROUNDS times (default 3); in each round a kit row and its baselines run back to back, their
order rotating from round to round, so slow drift of a noisy machine lands on both. Each row
reports the median and the range over the rounds, wrk's socket errors and non-2xx answers, and
CPU microseconds per request of the whole system under test, from the containers' cgroup
counters. Ratios are ratios of medians, printed with the range of the per-round ratios; a
difference whose per-round ratios fall on both sides of 1 is inside the noise (bench/figures.py).

Baselines:
- tutorial: bench/tutorial_app.py under uvicorn, one process (checked during each row);
- template peer: bench/peer/ (`fastapi run --workers 4`, sync SQLModel + psycopg in `def`
  endpoints, no cache) on the same PostgreSQL and table as the kit;
- bare ASGI: bench/bare_asgi.py under the kit's own gunicorn settings: the server's ceiling.

Writes bench-results/bench.json and bench-results/benchmarks.md (git-ignored scratch). With
BENCH_PUBLISH=1 (`make bench-publish`, a clean checkout) also docs/benchmarks.md and
docs/bench-results/bench.json, the published run. Exits 1 if a kit row had a failed request.

Settings (environment): BENCH_ROUNDS, BENCH_SECONDS, BENCH_CONNECTIONS; BENCH_HTTPS_PORT and
BENCH_EDGE_NETWORK_PREFIX if another stack holds the defaults (58543, 172.30.253); BENCH_ROWS, a comma list
of request groups (health, item_cached, item_db, items_page, create_item; default all);
BENCH_PHASES, a comma list of requests, tuning, scaling, operations (default all). A subset is for
checking the bench itself, never for publishing.

Run from the repository root as `python -m bench.run` (what `make bench` does), so `bench` and
`tests` are plain packages; the stack helpers are the tests' own (tests/support/). Importing this
module starts nothing: each phase is a function returning a typed result, main() runs them inside
`running(stack)` and `baselines(...)`, which always take the stack and every baseline container
down, and markdown() renders them.
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from bench import figures
from bench.figures import Ratio, Spread, Wrk
from tests.support import ROOT
from tests.support.stack import (
    PID1_CHILDREN,
    CommandFailed,
    Stack,
    compose_env,
    container_url,
    run,
    wait_until,
)

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
WARMUP_SECONDS = 2  # each row once, unmeasured, before the first round
# Each system under test left alone, for its idle CPU: longer than the 5 s health-check interval
# of the api and worker containers, whose probes are most of it.
IDLE_SECONDS = 12
SEED_ITEMS = 50_000
JOBS, JOB_COST = 24, 300_000  # ~0.5 s of CPU each: enough to show parallelism
# Another stack on the engine may hold these: both can be moved.
HTTPS_PORT = int(os.environ.get("BENCH_HTTPS_PORT", "58543"))
EDGE_NETWORK_PREFIX = os.environ.get("BENCH_EDGE_NETWORK_PREFIX", "172.30.253")
BASE_IMAGE = "python:3.12-slim"
ENV = {
    "APP_TAG": "bench",
    "EDGE_NETWORK_PREFIX": EDGE_NETWORK_PREFIX,
    # Raised for the bench: the proxy rows measure TLS and routing, not the limiter's refusals.
    "RATE_LIMIT_AVERAGE": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "BENCH_HTTPS_PORT": str(HTTPS_PORT),
}
PROJECT = "kit-bench"
API_IMAGE = "fastapi-kit-api:bench"
WORKER_IMAGE = "fastapi-kit-worker:bench"
PEER_IMAGE = "fastapi-kit-bench-peer:bench"  # bench/compose.peer.yaml
PROXY_HEADERS = {"Host": "api.localhost"}
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
PHASES = ("requests", "tuning", "scaling", "operations")


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


def ratio(a: float, b: float) -> float:
    return round(a / b, 2)


def selected(variable: str, choices: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The comma list in an environment variable (unset: all choices), checked against them."""
    raw = os.environ.get(variable, "")
    chosen = tuple(x.strip() for x in raw.split(",") if x.strip()) or tuple(choices)
    unknown = [x for x in chosen if x not in choices]
    if unknown:
        raise SystemExit(f"{variable}: unknown {unknown}; choose from {list(choices)}")
    return chosen


# ---------------------------------------------------------------- figures ---------------------
@dataclass(frozen=True)
class Measured(Wrk):
    """A wrk run against the kit, with the database connections the api opened meanwhile."""

    db_connections_opened: int = 0


@dataclass(frozen=True)
class Memory:
    """Average RSS and PSS (shared pages split between sharers) of the gunicorn workers, MiB."""

    workers: int
    rss_mib: float
    pss_mib: float


# ---------------------------------------------------------------- wrk -------------------------
def wrk(
    url: str,
    *,
    script: str | None = None,
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    seconds: int = SECONDS,
    during: Callable[[], None] | None = None,
) -> Wrk:
    """wrk against url; `during` is called once while the load runs (about a second in)."""
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    if script:
        args += ["-s", str(ROOT / "bench" / "wrk" / script)]
    args.append(url)
    with subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            if during is not None:
                time.sleep(min(1.0, seconds / 2))
                during()
            out, err = proc.communicate(timeout=seconds + 60)
        except BaseException:
            proc.kill()
            raise
    if proc.returncode != 0:
        raise CommandFailed(f"{shlex.join(args)} exited {proc.returncode}\n{out}\n{err}")
    return figures.parse_wrk(out)


# ---------------------------------------------------------------- containers ------------------
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
    return figures.count_processes(run(["docker", "top", container, "-eo", "pid,ppid,comm"]).stdout)


def docker_run(name: str, image: str, *args: str, command: tuple[str, ...] = ()) -> None:
    """A baseline container, without the image's HEALTHCHECK (its probes would run in the
    container during the rows, costing CPU the row would count)."""
    run(["docker", "rm", "-f", name], check=False)
    run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--label",
            f"com.fastapi-kit.bench={PROJECT}",
            "--no-healthcheck",
            "-p",
            "127.0.0.1::8000",
            *args,
            image,
            *command,
        ]
    )


@contextmanager
def container(
    name: str,
    image: str,
    *args: str,
    command: tuple[str, ...] = (),
    network: str | None = None,
) -> Iterator[str]:
    """A baseline container for the block, its URL; removed afterwards, whatever happens (also
    when it fails to start). network: also joined to it (the host reaches the container on the
    default bridge; an internal network has no route from the host)."""
    try:
        docker_run(name, image, *args, command=command)
        if network:
            run(["docker", "network", "connect", network, name])
        port = run(["docker", "port", name, "8000/tcp"]).stdout.split(":")[-1].strip()
        wait_http(f"http://127.0.0.1:{port}/health")
        yield container_url(name, f"http://127.0.0.1:{port}")
    finally:
        run(["docker", "rm", "-f", name], check=False)


# ---------------------------------------------------------------- helpers ---------------------
@functools.cache
def proxy_url() -> str:
    """Traefik's HTTPS entrypoint at its fixed address on the edge network, as the api rows reach
    the api: a published loopback port goes through docker-proxy, a userland copy that external
    traffic never takes (it is DNATed to the container) and that cost about 60 us per request
    here. The published port only where the edge network is out of reach (Docker Desktop)."""
    edge = f"https://{EDGE_NETWORK_PREFIX}.2:8443"
    try:
        httpx.get(f"{edge}/health", headers=PROXY_HEADERS, timeout=2, verify=False)
    except httpx.HTTPError:
        log(f"{edge} is out of reach: proxy rows go through docker-proxy, and cost it too")
        return f"https://127.0.0.1:{HTTPS_PORT}"
    return edge


def wait_http(url: str, within: float = 60, **kwargs: Any) -> float:
    """Seconds until url answered 200."""
    started = time.monotonic()
    wait_until(
        lambda: httpx.get(url, timeout=1, verify=False, **kwargs).status_code == 200,
        within=within,
        every=0.05,
        retry_on=(httpx.HTTPError,),
    )
    return time.monotonic() - started


def kit_requests(url: str, first_id: int, token: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each request scenario's wrk target and options. item_db walks ids that are not cached:
    flush the cache before it."""
    walk = {"WALK_FIRST": str(first_id), "WALK_SPAN": str(SEED_ITEMS)}
    return {
        "health": (f"{url}/health", {}),
        "item_cached": (f"{url}/items/{first_id}", {}),
        "item_db": (f"{url}/", {"script": "walk_items.lua", "env": walk}),
        "items_page": (f"{url}/items?limit=20&after={first_id}", {}),
        "create_item": (
            f"{url}/items",
            {"script": "create_item.lua", "env": {"BENCH_TOKEN": token}},
        ),
    }


def image_mib(ref: str) -> float:
    return round(int(run(["docker", "image", "inspect", "-f", "{{.Size}}", ref]).stdout) / 2**20, 1)


@dataclass
class BenchStack(Stack):
    """The kit's stack as the benchmark runs it: its own project, subnet and ports, no rate
    limit, the api also published on loopback (bench/compose.bench.yaml)."""

    project: str = PROJECT
    files: tuple[str, ...] = ("compose.yaml", "bench/compose.bench.yaml")
    env: dict[str, str] = field(default_factory=lambda: dict(ENV))

    def db_sessions(self) -> int:
        """Connections PostgreSQL has accepted so far: the difference over a run is the
        connections the api had to open (and authenticate) during it."""
        return int(
            self.psql("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        )

    def measured(self, url: str, **kwargs: Any) -> Measured:
        """wrk against the kit, with the database connections the api opened meanwhile."""
        before = self.db_sessions()
        figures = wrk(url, **kwargs)
        # Less the one psql opened to ask.
        return Measured(**asdict(figures), db_connections_opened=self.db_sessions() - before - 1)

    def flush_cache(self) -> None:
        self.compose("exec", "-T", "redis", "redis-cli", "-n", "0", "FLUSHDB")

    def seed_items(self) -> int:
        """SEED_ITEMS rows in the database; returns the first one's id."""
        self.psql(
            f"INSERT INTO items (name, description, price_cents) SELECT 'seed-' || g, 'seeded', g "
            f"FROM generate_series(1, {SEED_ITEMS}) g"
        )
        # Now, not by autovacuum in the middle of a row, whose CPU column it would inflate.
        self.psql("VACUUM ANALYZE items")
        return int(self.psql("SELECT min(id) FROM items"))

    def token(self) -> str:
        return self.compose(
            "exec", "-T", "api", "python", "-m", "api.token", "bench"
        ).stdout.strip()

    def api_url(self) -> str:
        published = f"http://127.0.0.1:{self.published_port('api', 8000)}"
        return container_url(self.container_ids("api")[0], published)

    def recreate(self, service: str, **env: str) -> None:
        self.compose("up", "-d", "--wait", "--no-deps", "--force-recreate", service, **env)

    def web_concurrency(self) -> int:
        api = self.container_ids("api")[0]
        out = run(
            [
                "docker",
                "exec",
                api,
                "python",
                "-c",
                "from core.settings import get_settings; print(get_settings().gunicorn_workers)",
            ]
        ).stdout
        return int(out)

    def worker_memory(self) -> Memory:
        """Average RSS and PSS of the gunicorn workers (PID 1's children), MiB."""
        api = self.container_ids("api")[0]
        code = PID1_CHILDREN + (
            "import re\n"
            "rows=[]\n"
            "for p in pid1_children():\n"
            "    t=open(f'/proc/{p}/smaps_rollup').read()\n"
            "    rows.append([int(re.search(k+r':\\s+(\\d+)',t).group(1)) for k in ('Rss','Pss')])\n"
            "print(len(rows), sum(r[0] for r in rows)/len(rows)/1024, sum(r[1] for r in rows)/len(rows)/1024)\n"
        )
        n, rss, pss = run(["docker", "exec", api, "python", "-c", code]).stdout.split()
        return Memory(workers=int(n), rss_mib=round(float(rss), 1), pss_mib=round(float(pss), 1))

    def submit_jobs(self, url: str, token: str) -> float:
        """Jobs per second at a fixed cost: submit JOBS at once, time until the last finished."""
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
            started = time.monotonic()
            pending = {
                client.post("/jobs", json={"cost": JOB_COST}).headers["location"]
                for _ in range(JOBS)
            }

            def all_succeeded() -> bool:
                pending.difference_update(
                    [loc for loc in pending if client.get(loc).json()["state"] == "succeeded"]
                )
                return not pending

            wait_until(all_succeeded, within=300, every=0.1, retry_on=())
            return round(JOBS / (time.monotonic() - started), 2)


@contextmanager
def running(stack: BenchStack) -> Iterator[None]:
    """The stack built and up for the block; taken down (volumes too) however the block ends:
    failure, Ctrl-C, or SIGTERM (see raise_on_sigterm)."""
    stack.down()
    try:
        stack.up()  # builds this checkout as tag `bench`
        yield
    finally:
        log("taking the stack down")
        stack.down()


@contextmanager
def baselines(stack: BenchStack, rows: tuple[str, ...]) -> Iterator[dict[str, str]]:
    """The baseline containers the chosen rows need, up for the block: their URLs by name. Each
    is removed afterwards whatever happens (ExitStack unwinds those already started)."""
    with ExitStack() as started:
        urls: dict[str, str] = {}
        if "tutorial_item" in rows:
            # What tutorials run: `uvicorn main:app`. No --workers and no WEB_CONCURRENCY (uvicorn
            # takes its worker count from it when --workers is absent): one process, which each
            # row checks.
            urls["tutorial"] = started.enter_context(
                container(
                    TUTORIAL_CONTAINER,
                    API_IMAGE,
                    "-v",
                    f"{ROOT / 'bench'}:/app/bench:ro",
                    command=("uvicorn", "bench.tutorial_app:app", "--host", "0.0.0.0"),
                )
            )
        if "bare_health" in rows:
            # The kit's gunicorn settings, with the kit api's own worker count.
            urls["bare"] = started.enter_context(
                container(
                    BARE_CONTAINER,
                    API_IMAGE,
                    "-e",
                    f"WEB_CONCURRENCY={stack.web_concurrency()}",
                    "-v",
                    f"{ROOT / 'bench'}:/app/bench:ro",
                    command=(
                        "gunicorn",
                        "--config=python:api.gunicorn_conf",
                        "bench.bare_asgi:app",
                    ),
                )
            )
        if any(row.startswith("peer_") for row in rows):
            # The template peer: on the bench stack's backend network, as the kit's app role.
            env = stack.env
            urls["peer"] = started.enter_context(
                container(
                    PEER_CONTAINER,
                    PEER_IMAGE,
                    "-e",
                    "POSTGRES_HOST=db",
                    "-e",
                    f"POSTGRES_USER={env.get('POSTGRES_APP_USER', 'app_rw')}",
                    "-e",
                    f"POSTGRES_PASSWORD={env.get('POSTGRES_APP_PASSWORD', 'app_rw')}",
                    "-e",
                    f"POSTGRES_DB={env.get('POSTGRES_DB', 'app')}",
                    network=f"{stack.project}_backend",
                )
            )
        yield urls


def build_peer() -> None:
    """The template peer's image (BuildKit, through compose: bench/compose.peer.yaml)."""
    run(
        ["docker", "compose", "-f", "bench/compose.peer.yaml", "build"],
        env=compose_env(),
        timeout=900,
    )


def raise_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled, `kill`) unwinds like Ctrl-C, so the cleanups run."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


# ---------------------------------------------------------------- the request rounds ----------
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
    """One request row: what wrk sends where, and whose CPU it costs."""

    system: str  # kit, kit via proxy, tutorial, template peer, bare ASGI
    url: str
    script: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    # The system under test: every container whose CPU the row's requests cost.
    containers: tuple[str, ...] = ()
    # The server's container, whose processes are counted during the row.
    server: str | None = None
    # If set, the row fails unless the server container has exactly this many processes.
    processes: int | None = None
    kit: bool = False  # the kit's own row: no failed request allowed, db connections counted
    before: Callable[[], None] | None = None


def targets(stack: BenchStack, seeded: Seeded, urls: dict[str, str]) -> dict[str, Target]:
    """Every request row, by name. Kit rows cost the kit's containers (api, worker, db, redis;
    the proxy and its socket proxy too through the proxy); the peer costs its own container and
    the db it shares with the kit."""
    kit_direct = tuple(
        c for service in ("api", "worker", "db", "redis") for c in stack.container_ids(service)
    )
    kit_proxied = (
        *kit_direct,
        *(c for service in ("proxy", "socket-proxy") for c in stack.container_ids(service)),
    )
    api = stack.container_ids("api")[0]
    db = stack.container_ids("db")
    first = seeded.first_id
    walk = {"WALK_FIRST": str(first), "WALK_SPAN": str(SEED_ITEMS)}
    item, page = f"/items/{first}", f"/items?limit=20&after={first}"

    def kit(path: str, **options: Any) -> Target:
        return Target(
            "kit", f"{seeded.url}{path}", containers=kit_direct, server=api, kit=True, **options
        )

    def proxied(path: str) -> Target:
        return Target(
            "kit via proxy",
            f"{proxy_url()}{path}",
            headers=PROXY_HEADERS,
            containers=kit_proxied,
            server=api,
            kit=True,
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
        peer = {"containers": (PEER_CONTAINER, *db), "server": PEER_CONTAINER}
        rows["peer_item"] = Target(
            "template peer", f"{urls['peer']}/", script="walk_items.lua", env=walk, **peer
        )
        rows["peer_page"] = Target("template peer", f"{urls['peer']}{page}", **peer)
        rows["peer_create"] = Target(
            "template peer", f"{urls['peer']}/items", script="create_item.lua", **peer
        )
    return rows


@dataclass(frozen=True)
class Sample:
    """One row in one round."""

    round: int
    position: int  # its place in its group that round, from 0
    wrk: Wrk
    cpu_usec: int | None  # CPU of the system under test over the row; None: no counter here
    processes: int | None  # in the server's container, during the row
    db_connections_opened: int | None  # kit rows: connections PostgreSQL accepted meanwhile

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.cpu_usec is None or not self.wrk.requests:
            return None
        return self.cpu_usec / self.wrk.requests


def cpu_usec(files: dict[str, list[Path]]) -> int | None:
    """The containers' CPU counters, summed; None if any container has none readable."""
    total = 0
    for paths in files.values():
        used = figures.read_cpu_counter(paths)
        if used is None:
            return None
        total += used
    return total


def measure_row(
    stack: BenchStack, name: str, t: Target, round_number: int, position: int
) -> Sample:
    """One row: anything it needs first (a cache flush), then the CPU counters and wrk, with
    nothing else run in the measured containers between the two counter readings."""
    if t.before is not None:
        t.before()
    sessions = stack.db_sessions() if t.kit else None
    files = {c: cpu_counter_files(c) for c in t.containers}
    counted: list[int] = []
    server = t.server

    def count() -> None:
        if server is not None:
            counted.append(processes(server))

    cpu_before = cpu_usec(files)
    w = wrk(t.url, script=t.script, headers=t.headers, env=t.env, during=count)
    cpu_after = cpu_usec(files)
    opened = None
    if sessions is not None:
        opened = stack.db_sessions() - sessions - 1  # less the one psql opened to ask
    seen = counted[0] if counted else None
    if t.processes is not None and seen != t.processes:
        raise RowFailed(
            f"{name}: {seen} processes in {server} during the row, {t.processes} expected"
        )
    used = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Sample(round_number, position, w, used, seen, opened)


def idle_cpu(
    rows: dict[str, Target], names: tuple[str, ...]
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """Each system under test's CPU while nothing is sent to it, and each container's, in ms of
    CPU per second: what the rows' CPU column holds besides the requests (health checks, Celery's
    heartbeats, the reaper), which matters only where a row serves few requests."""
    systems = {rows[name].system: rows[name].containers for name in names}
    containers = sorted({c for cs in systems.values() for c in cs})
    files = {c: cpu_counter_files(c) for c in containers}
    before = {c: figures.read_cpu_counter(f) for c, f in files.items()}
    time.sleep(IDLE_SECONDS)
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
    by_name = {
        run(["docker", "inspect", "-f", "{{.Name}}", c]).stdout.strip().lstrip("/"): (
            None if v is None else round(v, 1)
        )
        for c, v in used.items()
    }
    return by_system, by_name


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


# ---------------------------------------------------------------- tuning and scaling ----------
# One run each (Traefik's Go threads: alternating pairs), every ratio's two sides measured next
# to each other: indicative (the request rows above carry the claims).
@dataclass(frozen=True)
class Proxied:
    """A row through the proxy, with Traefik's own CPU per request over it."""

    wrk: Wrk
    proxy_cpu_us: float | None  # None: no CPU counter from here (Docker Desktop)


def through_proxy(stack: BenchStack, url: str) -> Proxied:
    files = cpu_counter_files(stack.container_ids("proxy")[0])
    before = figures.read_cpu_counter(files)
    w = wrk(url, headers=PROXY_HEADERS)
    after = figures.read_cpu_counter(files)
    if before is None or after is None or not w.requests:
        return Proxied(w, None)
    return Proxied(w, round((after - before) / w.requests, 1))


@dataclass(frozen=True)
class Tuning:
    keep_alive: Wrk  # /health, wrk's keep-alive connections
    connection_close: Wrk  # /health, a new connection per request, right after
    memory_preload: Memory  # fresh container, after a warm-up
    reference: Wrk  # cached item, default settings, fresh container
    reference_page: Measured  # items page, same
    access_log_all: Wrk  # cached item, ACCESS_LOG=all (a line per request from the app)
    proxy_reference: Wrk  # cached item through the proxy, default settings
    proxy_log_problems: Wrk  # the same, PROXY_ACCESS_LOG_CODES=400-599 (errors only)
    pool_overflow_5_5: Measured  # items page, DB_POOL_SIZE=5 DB_MAX_OVERFLOW=5
    host_cpus: int  # Go's own GOMAXPROCS here: one per CPU the engine sees
    # Cached item through the proxy, a pair per round: (PROXY_GOMAXPROCS=1, =host_cpus), the
    # order within the pair alternating. Empty where the engine has one CPU (nothing to compare).
    go_threads: tuple[tuple[Proxied, Proxied], ...]

    def go_threads_rps(self) -> figures.Ratio:
        return figures.ratio(
            [one.wrk.rps for one, _ in self.go_threads],
            [default.wrk.rps for _, default in self.go_threads],
        )

    def go_threads_proxy_cpu(self) -> figures.Ratio | None:
        """Traefik's CPU per request, one thread over Go's default; None without counters."""
        one = [p.proxy_cpu_us for p, _ in self.go_threads]
        default = [p.proxy_cpu_us for _, p in self.go_threads]
        if not self.go_threads or None in one or None in default:
            return None
        return figures.ratio(one, default)  # type: ignore[arg-type]


def tuning_rows(stack: BenchStack, seeded: Seeded, rounds: int) -> Tuning:
    log("tuning: client keep-alive")
    # What keep-alive saves: wrk opening a new TCP connection for every request instead.
    keep_alive = wrk(f"{seeded.url}/health")
    connection_close = wrk(f"{seeded.url}/health", headers={"Connection": "close"})

    log("tuning: settings, each on a fresh api container")
    item, page = f"/items/{seeded.first_id}", f"/items?limit=20&after={seeded.first_id}"
    # Memory with and without preload (scaling_rows), each from a fresh container after the same
    # warm-up.
    stack.recreate("api")
    fresh = stack.api_url()
    wrk(f"{fresh}{item}", seconds=2)
    memory_preload = stack.worker_memory()
    # The reference for the rows here and in scaling_rows, measured next to them.
    reference = wrk(f"{fresh}{item}")
    reference_page = stack.measured(f"{fresh}{page}")
    stack.recreate("api", ACCESS_LOG="all")
    wrk(f"{stack.api_url()}{item}", seconds=WARMUP_SECONDS)  # a fresh container: warm it
    access_log_all = wrk(f"{stack.api_url()}{item}")
    # Pool: the old default (5 + 5 overflow) against the default (10 + 0), on the page.
    stack.recreate("api", DB_POOL_SIZE="5", DB_MAX_OVERFLOW="5")
    wrk(f"{stack.api_url()}{page}", seconds=WARMUP_SECONDS)
    pool_overflow_5_5 = stack.measured(f"{stack.api_url()}{page}")
    stack.recreate("api")
    # Traefik's access log: a line per request (the default) against errors only, each on a
    # freshly created proxy.
    stack.recreate("proxy")
    wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS, seconds=WARMUP_SECONDS)
    proxy_reference = wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS)
    stack.recreate("proxy", PROXY_ACCESS_LOG_CODES="400-599")
    wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS, seconds=WARMUP_SECONDS)
    proxy_log_problems = wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS)
    # Traefik's Go threads: the kit's one against Go's own default, a thread per CPU, a pair a
    # round, which side goes first alternating (a single run of each was inside the noise).
    # Both values given, so neither side can come from the shell or a .env.
    host_cpus = engine_cpus()
    go_threads = []
    for round_number in range(rounds if host_cpus > 1 else 0):
        order = ("1", str(host_cpus)) if round_number % 2 == 0 else (str(host_cpus), "1")
        measured: dict[str, Proxied] = {}
        for threads in order:
            stack.recreate("proxy", PROXY_GOMAXPROCS=threads)
            wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS, seconds=WARMUP_SECONDS)
            measured[threads] = through_proxy(stack, f"{proxy_url()}{item}")
        go_threads.append((measured["1"], measured[str(host_cpus)]))
    stack.recreate("proxy")
    return Tuning(
        keep_alive=keep_alive,
        connection_close=connection_close,
        memory_preload=memory_preload,
        reference=reference,
        reference_page=reference_page,
        access_log_all=access_log_all,
        proxy_reference=proxy_reference,
        proxy_log_problems=proxy_log_problems,
        host_cpus=host_cpus,
        go_threads=tuple(go_threads),
        pool_overflow_5_5=pool_overflow_5_5,
    )


@dataclass(frozen=True)
class Scaling:
    default_workers: int
    default_worker_rps: float  # cached item, the default worker count, right before one_worker
    one_worker: Wrk  # cached item, WEB_CONCURRENCY=1
    memory_no_preload: Memory
    jobs_per_second: float  # default CELERY_CONCURRENCY
    one_celery_jobs_per_second: float  # right after
    one_replica: Wrk  # cached item via the proxy, one api container
    two_replicas: Wrk  # right after, api scaled to 2


def scaling_rows(stack: BenchStack, seeded: Seeded) -> Scaling:
    log("scaling")
    item = f"/items/{seeded.first_id}"
    default_workers = stack.web_concurrency()
    stack.recreate("api")
    wrk(f"{stack.api_url()}{item}", seconds=WARMUP_SECONDS)  # each fresh container warmed first
    default_worker_rps = wrk(f"{stack.api_url()}{item}").rps
    stack.recreate("api", WEB_CONCURRENCY="1")
    wrk(f"{stack.api_url()}{item}", seconds=WARMUP_SECONDS)
    one_worker = wrk(f"{stack.api_url()}{item}")
    stack.recreate("api", GUNICORN_PRELOAD_APP="false")
    wrk(f"{stack.api_url()}{item}", seconds=2)  # warm every worker
    memory_no_preload = stack.worker_memory()
    stack.recreate("api")
    jobs_per_second = stack.submit_jobs(stack.api_url(), seeded.token)
    stack.recreate("worker", CELERY_CONCURRENCY="1")
    one_celery = stack.submit_jobs(stack.api_url(), seeded.token)
    stack.recreate("worker")
    one_replica = wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS)
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=2", "api")
    time.sleep(3)  # Traefik picks up the second replica
    wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS, seconds=WARMUP_SECONDS)
    two_replicas = wrk(f"{proxy_url()}{item}", headers=PROXY_HEADERS)
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=1", "api")
    return Scaling(
        default_workers=default_workers,
        default_worker_rps=default_worker_rps,
        one_worker=one_worker,
        memory_no_preload=memory_no_preload,
        jobs_per_second=jobs_per_second,
        one_celery_jobs_per_second=one_celery,
        one_replica=one_replica,
        two_replicas=two_replicas,
    )


@dataclass(frozen=True)
class Startup:
    up_wait_seconds: float
    api_restart_to_first_200_seconds: float
    api_restart_to_healthy_seconds: float


def startup_timing(stack: BenchStack) -> Startup:
    log("operations")
    stack.compose("down", "--timeout", "30")
    t = time.monotonic()
    stack.up(build=False)
    up_wait = round(time.monotonic() - t, 1)
    api = stack.container_ids("api")[0]
    t = time.monotonic()
    run(["docker", "restart", api])
    # The published port: the container's address is probed for reachability, which fails while
    # the api is still starting. Everything from the restart to the first 200 is counted.
    wait_http(f"http://127.0.0.1:{stack.published_port('api', 8000)}/health")
    first_200 = round(time.monotonic() - t, 1)
    stack.wait_healthy("api")
    healthy = round(time.monotonic() - t, 1)
    return Startup(
        up_wait_seconds=up_wait,
        api_restart_to_first_200_seconds=first_200,
        api_restart_to_healthy_seconds=healthy,
    )


@dataclass(frozen=True)
class Images:
    """Sizes, MiB."""

    base: float
    api: float
    worker: float


def image_sizes() -> Images:
    return Images(
        base=image_mib(BASE_IMAGE), api=image_mib(API_IMAGE), worker=image_mib(WORKER_IMAGE)
    )


def rebuild_seconds(stack: BenchStack) -> float:
    """`docker compose build api` after a code-only change, without touching this checkout.

    The build context is copied to a temporary directory: the files git sees (tracked, and
    untracked unless ignored; .dockerignore then picks from them exactly as it does here, and
    nothing it admits is git-ignored). api/__init__.py is changed in the copy only, and a compose
    overlay, also temporary, points the api's build at the copy. BuildKit keys its cache on the
    files' contents and metadata, not on the directory they came from (copy2 keeps modes; the
    copies belong to whoever runs the bench, as a checkout normally does), so the dependency
    layers are reused just as for an edit in place and only the code layers rebuild.
    """
    with tempfile.TemporaryDirectory(prefix="kit-bench-rebuild-") as tmp:
        context = Path(tmp) / "context"
        listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"]).stdout
        for name in filter(None, listed.split("\0")):
            source = ROOT / name
            if source.is_file() or source.is_symlink():  # not a file deleted from the worktree
                (context / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, context / name, follow_symlinks=False)
        marker = context / "api" / "__init__.py"
        marker.write_text(marker.read_text() + f"# bench {time.time()}\n")
        overlay = Path(tmp) / "compose.rebuild.yaml"
        # JSON is YAML: the api's build context only; target, tag and the rest stay as they are.
        overlay.write_text(json.dumps({"services": {"api": {"build": {"context": str(context)}}}}))
        rebuilding = replace(stack, files=(*stack.files, str(overlay)))
        t = time.monotonic()
        rebuilding.compose("build", "api")
        return round(time.monotonic() - t, 1)


# ---------------------------------------------------------------- the record ------------------
@dataclass(frozen=True)
class Machine:
    cpus: int | None
    cpu: str
    memory_gib: float | None
    kernel: str
    docker_engine: str
    cgroup: str  # where the CPU column comes from
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


def machine(load_average_before: tuple[float, float, float], other_containers: int) -> Machine:
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
        target=load_target(),
        load_average_before=(
            round(load_average_before[0], 2),
            round(load_average_before[1], 2),
            round(load_average_before[2], 2),
        ),
        other_containers=other_containers,
    )


def load_target() -> str:
    """Where wrk sent the load in this run: proxy_url() decides it the first time a proxy row
    asks, so this is read after the rows."""
    containers = "container addresses on their Docker networks"
    if not proxy_url.cache_info().currsize:
        return containers
    if proxy_url().startswith(f"https://{EDGE_NETWORK_PREFIX}."):
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
    settings = {
        k: v
        for k, v in sorted(os.environ.items())
        if k in ("BENCH_ROUNDS", "BENCH_SECONDS", "BENCH_CONNECTIONS", "BENCH_ROWS", "BENCH_PHASES")
    }
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
    return {
        BASE_IMAGE: "Python "
        + in_service("api", "python", "-c", "import platform; print(platform.python_version())"),
        "postgres:17": "PostgreSQL " + stack.psql("SHOW server_version"),
        "redis:7": f"Redis {redis.group(1) if redis else 'unknown'}",
        "traefik:v3.6": " ".join(
            in_service("proxy", "traefik", "version").replace("Version:", "Traefik").split()
        ),
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


# ---------------------------------------------------------------- the results -----------------
@dataclass(frozen=True)
class Row:
    system: str
    kit: bool
    samples: list[Sample]

    def spread(self, figure: Callable[[Sample], float | None]) -> Spread | None:
        values = [figure(s) for s in self.samples]
        if not values or any(v is None for v in values):
            return None
        return figures.spread([float(v) for v in values if v is not None])

    @property
    def rps(self) -> Spread:
        spread = self.spread(lambda s: s.wrk.rps)
        assert spread is not None
        return spread

    @property
    def cpu(self) -> Spread | None:
        return self.spread(lambda s: s.cpu_us_per_request)

    def total(self, figure: Callable[[Wrk], int]) -> int:
        return sum(figure(s.wrk) for s in self.samples)

    @property
    def socket_errors(self) -> dict[str, int]:
        return {
            "connect": self.total(lambda w: w.connect_errors),
            "read": self.total(lambda w: w.read_errors),
            "write": self.total(lambda w: w.write_errors),
            "timeout": self.total(lambda w: w.timeouts),
        }

    @property
    def failed_requests(self) -> int:
        return self.total(lambda w: w.errors)

    @property
    def empty_rounds(self) -> list[int]:
        return [s.round for s in self.samples if not s.wrk.requests]

    @property
    def db_connections_opened(self) -> str:
        opened = [s.db_connections_opened for s in self.samples]
        return "-" if any(o is None for o in opened) else str(sum(o or 0 for o in opened))

    @property
    def processes(self) -> str:
        seen = sorted({s.processes for s in self.samples if s.processes is not None})
        return "/".join(map(str, seen)) or "-"


@dataclass(frozen=True)
class Compared:
    comparison: Comparison
    rps: Ratio
    cpu: Ratio | None  # CPU per request, row over baseline


@dataclass(frozen=True)
class Results:
    info: RunInfo
    machine: Machine
    rows: dict[str, Row]
    idle_cpu_ms_per_second: dict[str, float | None]  # by system, before the rounds
    idle_cpu_ms_per_second_by_container: dict[str, float | None]
    tuning: Tuning | None
    scaling: Scaling | None
    startup: Startup | None
    images: Images | None
    rebuild_seconds: float | None
    duration_seconds: int

    @property
    def compared(self) -> list[Compared]:
        out = []
        for c in COMPARISONS:
            if c.row not in self.rows or c.baseline not in self.rows:
                continue
            a, b = self.rows[c.row], self.rows[c.baseline]
            if b.empty_rounds:
                continue  # nothing to divide by (baseline_problems says so)
            cpu_a = [s.cpu_us_per_request for s in a.samples]
            cpu_b = [s.cpu_us_per_request for s in b.samples]
            cpu = None
            if all(x is not None and x > 0 for x in [*cpu_a, *cpu_b]):
                cpu = figures.ratio([float(x) for x in cpu_a if x], [float(x) for x in cpu_b if x])
            rps = figures.ratio([s.wrk.rps for s in a.samples], [s.wrk.rps for s in b.samples])
            out.append(Compared(c, rps, cpu))
        return out

    @property
    def kit_failures(self) -> list[str]:
        """Kit rows with requests that failed, or a round in which none completed (wrk does not
        count a request still waiting when the row ends): the kit must have none."""
        failures = [
            f"{name}: {row.failed_requests} failed requests (socket errors {row.socket_errors}, "
            f"non-2xx {row.total(lambda w: w.non_2xx)})"
            for name, row in self.rows.items()
            if row.kit and row.failed_requests
        ]
        failures += [
            f"{name}: no request completed in round(s) {row.empty_rounds}"
            for name, row in self.rows.items()
            if row.kit and row.empty_rounds
        ]
        return failures

    @property
    def baseline_problems(self) -> list[str]:
        """Baseline rows with a round that completed nothing: their comparisons are left out."""
        return [
            f"{name}: no request completed in round(s) {row.empty_rounds}; its comparisons are "
            "left out"
            for name, row in self.rows.items()
            if not row.kit and row.empty_rounds
        ]


def as_json(r: Results) -> dict[str, Any]:
    """The layout of bench.json: every round's raw figures, and what the report derives."""

    def spread(s: Spread | None) -> dict[str, float] | None:
        return None if s is None else {"median": s.median, "min": s.low, "max": s.high}

    rows = {}
    for name, row in r.rows.items():
        rows[name] = {
            "system": row.system,
            "kit": row.kit,
            "rps": spread(row.rps),
            "p50_ms": spread(row.spread(lambda s: s.wrk.p50_ms)),
            "p99_ms": spread(row.spread(lambda s: s.wrk.p99_ms)),
            "cpu_us_per_request": spread(row.cpu),
            "socket_errors": row.socket_errors,
            "non_2xx": row.total(lambda w: w.non_2xx),
            "rounds": [
                {
                    "round": s.round,
                    "position": s.position,
                    **asdict(s.wrk),
                    "cpu_usec": s.cpu_usec,
                    "cpu_us_per_request": s.cpu_us_per_request,
                    "processes": s.processes,
                    "db_connections_opened": s.db_connections_opened,
                }
                for s in row.samples
            ],
        }
    comparisons = [
        {
            "row": c.comparison.row,
            "baseline": c.comparison.baseline,
            "what": c.comparison.what,
            "rps_ratio_of_medians": c.rps.of_medians,
            "rps_ratio_per_round": list(c.rps.per_round),
            "inside_the_noise": c.rps.within_noise_of(1.0),
            "cpu_per_request_ratio_of_medians": c.cpu.of_medians if c.cpu else None,
            "cpu_per_request_ratio_per_round": list(c.cpu.per_round) if c.cpu else None,
            "goal": c.comparison.goal,
            "goal_verdict": (
                figures.goal_verdict(c.rps, c.comparison.goal) if c.comparison.goal else None
            ),
        }
        for c in r.compared
    ]
    out: dict[str, Any] = {
        "run": asdict(r.info),
        "machine": asdict(r.machine),
        "rows": rows,
        "idle_cpu_ms_per_second": r.idle_cpu_ms_per_second,
        "idle_cpu_ms_per_second_by_container": r.idle_cpu_ms_per_second_by_container,
        "comparisons": comparisons,
        "kit_failures": r.kit_failures,
        "baseline_problems": r.baseline_problems,
        "duration_seconds": r.duration_seconds,
    }
    if r.tuning is not None:
        out["tuning"] = asdict(r.tuning)
    if r.scaling is not None:
        out["scaling"] = asdict(r.scaling)
    if r.startup is not None and r.images is not None:
        out["operations"] = {
            **asdict(r.startup),
            "image_mib": asdict(r.images),
            "image_overhead_mib": round(r.images.api - r.images.base, 1),
            "rebuild_after_code_change_seconds": r.rebuild_seconds,
        }
    return out


def _errors_cell(row: Row) -> str:
    e = row.socket_errors
    socket = "0" if not any(e.values()) else "/".join(str(e[k]) for k in e)
    return socket


def markdown(r: Results) -> str:
    m, info = r.machine, r.info
    dirty = " (with uncommitted changes: not a publishable run)" if info.uncommitted_changes else ""
    lines = [
        "# Benchmarks",
        "",
        f"Commit `{info.commit}`{dirty}, measured on {m.date} with `{info.command}` "
        f"({info.rounds} rounds; the whole run took {r.duration_seconds} s).",
        "",
        f"Machine: {m.cpus} CPUs ({m.cpu}), {m.memory_gib} GiB, kernel {m.kernel}, Docker Engine "
        f"{m.docker_engine}; load average {' '.join(map(str, m.load_average_before))} at the start, "
        f"{m.other_containers} containers of other projects running. Load: wrk {m.wrk} from this "
        f"host, to {m.target}; wrk shares the CPUs with what it measures. "
        f"Raw figures, every round: [bench-results/bench.json](bench-results/bench.json).",
        "",
        "Images (a stand-in is built locally from Debian packages and tagged with the public "
        "name; what runs inside was asked of the running containers):",
        "",
        "| image | stand-in | inside |",
        "|---|---|---|",
    ]
    for ref, image in info.images.items():
        lines.append(f"| `{ref}` | {'yes' if image['stand_in'] else 'no'} | {image['inside']} |")
    failures = r.kit_failures
    if failures:
        lines += ["", "**FAILED: kit rows with failed requests** (the kit must have none):", ""]
        lines += [f"- {f}" for f in failures]
    if r.baseline_problems:
        lines += ["", "**Baselines that measured nothing in a round:**", ""]
        lines += [f"- {p}" for p in r.baseline_problems]
    lines += [
        "",
        "## How to read this",
        "",
        f"- Every request row ran {info.rounds} time(s), after one unmeasured warm-up run. A kit row and its baselines (its group) run "
        "back to back, in an order that rotates each round. Figures are the median over the "
        "rounds with the range (min..max) in brackets.",
        "- A ratio is the ratio of the medians, with the range of the per-round ratios (each "
        "round's two rows measured next to each other). **Noise rule:** a difference is inside "
        "the noise when its per-round ratios fall on both sides of 1.0; a goal is qualified "
        '"inside the noise" when they fall on both sides of the goal.',
        "- CPU µs/request: CPU time of the whole system under test over the row (from "
        f"{m.cgroup}, read before and after), divided by the requests wrk completed. Kit rows: "
        "api, worker, db and redis containers (and proxy and socket-proxy through the proxy); "
        "the template peer: its container and the db; tutorial and bare ASGI: their container. "
        "wrk's own CPU is not counted. On a machine where wrk does not share the cores, this is "
        "the figure that carries over.",
        "- Socket errors are wrk's connect/read/write/timeout counts over all rounds; non-2xx are "
        "answers of 400 and above. Kit rows must have none.",
        "- db connections opened: connections PostgreSQL accepted during the kit's rows, all "
        "rounds (each a TCP handshake and a password exchange): the pools fill during the "
        "warm-up and then open none.",
        "- Processes: in the server's container during the row (the tutorial must have 1; the "
        "peer is `fastapi run --workers 4`: a supervisor, its workers and multiprocessing's "
        "helper).",
        "",
    ]
    compared = r.compared
    goals = [c for c in compared if c.comparison.goal is not None]
    if goals:
        lines += [
            "## Goals",
            "",
            "| goal | ratio (per-round range) | verdict |",
            "|---|---:|---|",
        ]
        for c in goals:
            goal = c.comparison.goal
            assert goal is not None
            lines.append(
                f"| {c.comparison.row} ≥ {goal} x {c.comparison.baseline}: {c.comparison.what} "
                f"| {c.rps.show()} | {figures.goal_verdict(c.rps, goal)} |"
            )
        lines.append("")
    if r.rows:
        lines += [
            "## Requests",
            "",
            "Kit rows hit the api container directly (plain HTTP, at its address on the edge "
            "network, like the baselines); `via_proxy` rows go through Traefik over HTTPS, at "
            "its address on the edge network, with the rate limit raised for the bench. "
            "`item_db` walks 50,000 ids after a cache flush; the peer walks the same ids. "
            "`create_item` is authenticated on the kit (a JWT), not on the peer.",
            "",
            "| row | system | req/s | p50 ms | p99 ms | CPU µs/request | socket errors "
            "(c/r/w/t) | non-2xx | processes | db connections opened |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, row in r.rows.items():
            p50 = row.spread(lambda s: s.wrk.p50_ms)
            p99 = row.spread(lambda s: s.wrk.p99_ms)
            cpu = row.cpu
            failed = row.kit and row.failed_requests
            non_2xx = row.total(lambda w: w.non_2xx)
            lines.append(
                f"| {name} | {row.system} | {row.rps.show()} "
                f"| {p50.show(2) if p50 else '-'} | {p99.show(1) if p99 else '-'} "
                f"| {cpu.show(0) if cpu else '-'} "
                f"| {'**' if failed else ''}{_errors_cell(row)}{'**' if failed else ''} "
                f"| {'**' if failed else ''}{non_2xx}{'**' if failed else ''} "
                f"| {row.processes} | {row.db_connections_opened} |"
            )
        lines += [
            "",
            "| comparison | req/s ratio | difference | CPU/request ratio |",
            "|---|---:|---|---:|",
        ]
        for c in compared:
            lines.append(
                f"| {c.comparison.row} / {c.comparison.baseline}: {c.comparison.what} "
                f"| {c.rps.show()} | {figures.difference_verdict(c.rps)} "
                f"| {c.cpu.show() if c.cpu else '-'} |"
            )
        if r.idle_cpu_ms_per_second:
            idle = ", ".join(
                f"{system} {'-' if v is None else v}"
                for system, v in r.idle_cpu_ms_per_second.items()
            )
            lines += [
                "",
                f"Idle CPU of each system under test, ms per second ({IDLE_SECONDS} s before "
                f"the rounds, nothing sent; by container in bench.json): {idle}. The CPU column "
                "includes it: it matters "
                "only in rows that serve few requests.",
            ]
        lines.append("")
    if r.scaling is not None:
        s = r.scaling
        lines += [
            "## Scaling",
            "",
            "One run each, the two sides measured next to each other: indicative, no spread.",
            "",
            "| what | 1 | default | ratio |",
            "|---|---:|---:|---:|",
            f"| WEB_CONCURRENCY (default {s.default_workers}), cached item req/s "
            f"| {s.one_worker.rps} | {s.default_worker_rps} "
            f"| {ratio(s.default_worker_rps, s.one_worker.rps)} |",
            f"| CELERY_CONCURRENCY, jobs/s ({JOBS} jobs of {JOB_COST} SHA-256 rounds) "
            f"| {s.one_celery_jobs_per_second} | {s.jobs_per_second} "
            f"| {ratio(s.jobs_per_second, s.one_celery_jobs_per_second)} |",
            f"| api replicas 1 → 2, cached item via proxy req/s | {s.one_replica.rps} "
            f"| {s.two_replicas.rps} | {ratio(s.two_replicas.rps, s.one_replica.rps)} |",
            "",
        ]
    if r.tuning is not None:
        t = r.tuning
        page, overflow = t.reference_page, t.pool_overflow_5_5
        lines += [
            "## Tuning",
            "",
            "One run each, the two sides measured next to each other: indicative, no spread; "
            "where a row says pairs, the ratio of the medians with the per-pair range.",
            "",
            "| change | ratio |",
            "|---|---:|",
            f"| app access log problems only (ACCESS_LOG default) vs every request, cached "
            f"item req/s | {ratio(t.reference.rps, t.access_log_all.rps)} |",
            f"| Traefik access log errors only (PROXY_ACCESS_LOG_CODES=400-599) vs every request "
            f"(default), cached item via proxy req/s "
            f"| {ratio(t.proxy_log_problems.rps, t.proxy_reference.rps)} |",
            *go_threads_row(t),
            f"| client keep-alive vs a new connection per request, /health req/s "
            f"| {ratio(t.keep_alive.rps, t.connection_close.rps)} |",
            f"| pool 10 + 0 overflow (default) vs 5 + 5, page req/s (p99 {page.p99_ms} "
            f"vs {overflow.p99_ms} ms; connections opened {page.db_connections_opened} vs "
            f"{overflow.db_connections_opened}) | {ratio(page.rps, overflow.rps)} |",
            "",
        ]
    if r.startup is not None and r.images is not None:
        o, images = r.startup, r.images
        lines += [
            "## Operations",
            "",
            "| what | figure |",
            "|---|---:|",
            f"| `docker compose up --wait`, images built | {o.up_wait_seconds} s |",
            f"| api restart to first 200 on /health | {o.api_restart_to_first_200_seconds} s |",
            f"| api restart to healthy (HEALTHCHECK every 5 s) | {o.api_restart_to_healthy_seconds} s |",
            f"| rebuild after a code-only change | {r.rebuild_seconds} s |",
            f"| image: base `{BASE_IMAGE}` | {images.base} MiB |",
            f"| image: api / worker | {images.api} / {images.worker} MiB |",
            f"| image overhead over the base (shared by both) | {round(images.api - images.base, 1)} MiB |",
        ]
        if r.tuning is not None and r.scaling is not None:
            pre, nopre = r.tuning.memory_preload, r.scaling.memory_no_preload
            lines += [
                f"| memory per gunicorn worker, preload: RSS / PSS | {pre.rss_mib} / {pre.pss_mib} MiB |",
                f"| memory per gunicorn worker, no preload: RSS / PSS | {nopre.rss_mib} / "
                f"{nopre.pss_mib} MiB |",
            ]
        lines.append("")
    return "\n".join(lines)


def go_threads_row(t: Tuning) -> list[str]:
    if not t.go_threads:
        return []
    cpu = t.go_threads_proxy_cpu()
    of_cpu = f" (Traefik's CPU per request: {cpu.show()} of it)" if cpu is not None else ""
    return [
        f"| Traefik on one Go thread (PROXY_GOMAXPROCS=1, default) vs Go's default here "
        f"({t.host_cpus}), cached item via proxy req/s, {len(t.go_threads)} alternating "
        f"pair{'s' if len(t.go_threads) > 1 else ''}{of_cpu} | {t.go_threads_rps().show()} |"
    ]


# ---------------------------------------------------------------- the run ---------------------
def measure(groups: tuple[str, ...], phases: tuple[str, ...], rounds: int) -> Results:
    """Every chosen phase, in order, on a stack that is taken down at the end, and baseline
    containers removed at the end of theirs, whatever happens."""
    started = time.monotonic()
    load = os.getloadavg()
    others = other_containers()
    commit, dirty = git_commit()
    stack = BenchStack()
    rows: dict[str, Row] = {}
    idle: dict[str, float | None] = {}
    idle_by_container: dict[str, float | None] = {}
    tuning = scaling = startup = images = rebuild = None
    chosen = tuple(name for g in groups for name in GROUPS[g]) if "requests" in phases else ()
    if any(name.startswith("peer_") for name in chosen):
        log("building the template peer's image")
        build_peer()
    log("building and starting the stack")
    with running(stack):
        # The published port, reachable everywhere: proxy_url() is decided once the proxy answers.
        wait_http(f"https://127.0.0.1:{HTTPS_PORT}/ready", headers=PROXY_HEADERS)
        record = image_record(stack)
        seeded = seed(stack)
        if chosen:
            with baselines(stack, chosen) as urls:
                every = targets(stack, seeded, urls)
                log("idle CPU of each system under test, then a warm-up")
                idle, idle_by_container = idle_cpu(every, chosen)
                warm_up(every, chosen)
                log(f"request rows, {rounds} rounds: {', '.join(chosen)}")
                samples = request_rounds(stack, every, groups, rounds)
            rows = {
                name: Row(every[name].system, every[name].kit, samples[name]) for name in chosen
            }
        if "tuning" in phases:
            tuning = tuning_rows(stack, seeded, rounds)
        if "scaling" in phases:
            scaling = scaling_rows(stack, seeded)
        if "operations" in phases:
            startup = startup_timing(stack)
            images = image_sizes()
            rebuild = rebuild_seconds(stack)
    info = RunInfo(
        commit=commit,
        uncommitted_changes=dirty,
        command=command_line(),
        rounds=rounds,
        groups=groups,
        phases=phases,
        images=record,
    )
    return Results(
        info=info,
        machine=machine(load, others),
        rows=rows,
        idle_cpu_ms_per_second=idle,
        idle_cpu_ms_per_second_by_container=idle_by_container,
        tuning=tuning,
        scaling=scaling,
        startup=startup,
        images=images,
        rebuild_seconds=rebuild,
        duration_seconds=round(time.monotonic() - started),
    )


def write(results: Results, directory: Path, report: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bench.json").write_text(json.dumps(as_json(results), indent=2) + "\n")
    (directory / "benchmarks.md").write_text(report)


def main() -> None:
    raise_on_sigterm()
    groups = selected("BENCH_ROWS", list(GROUPS))
    phases = selected("BENCH_PHASES", PHASES)
    publish = os.environ.get("BENCH_PUBLISH") == "1"
    if publish:
        # Published figures name the commit they measured: it must be exactly that commit, and
        # the whole bench.
        _, dirty = git_commit()
        if dirty or groups != tuple(GROUPS) or phases != PHASES or ROUNDS < 3:
            raise SystemExit(
                "bench-publish: needs a clean checkout, every row and phase, and BENCH_ROUNDS >= 3"
            )
    if publish and (os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1) or other_containers()):
        # Not refused (the report records both), but these figures are meant to be defended.
        log(
            f"warning: load average {os.getloadavg()[0]:.1f} and {other_containers()} other "
            "containers running: this machine is not quiet"
        )
    results = measure(groups, phases, ROUNDS)
    report = markdown(results)
    write(results, ROOT / "bench-results", report)
    if publish:
        # The report links its raw figures as bench-results/bench.json, next to it in docs/.
        (ROOT / "docs" / "benchmarks.md").write_text(report)
        (ROOT / "docs" / "bench-results").mkdir(parents=True, exist_ok=True)
        (ROOT / "docs" / "bench-results" / "bench.json").write_text(
            json.dumps(as_json(results), indent=2) + "\n"
        )
    print(report)
    if results.kit_failures:
        log("FAILED: kit rows with failed requests:\n  " + "\n  ".join(results.kit_failures))
        raise SystemExit(1)


if __name__ == "__main__":
    main()
