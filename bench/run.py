"""make bench: throughput, latency, start-up, size and scaling of the kit, each against baselines
measured in the same run on the same machine.

Load comes from wrk on this host. Prints a table and writes the same figures to
bench-results/bench.json and docs/benchmarks.md. Takes about 6 minutes on 2 cores.

Run from the repository root as `python -m bench.run` (what `make bench` does), so `bench` and
`tests` are plain packages; the stack helpers are the tests' own (tests/stack.py). Importing this
module starts nothing: each phase below is a function returning a typed result, main() runs them
in order inside `running(stack)`, which always takes the stack down, and markdown() renders them.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from tests.stack import PID1_CHILDREN, ROOT, Stack, container_url, run, wait_until

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
SEED_ITEMS = 50_000
JOBS, JOB_COST = 24, 300_000  # ~0.5 s of CPU each: enough to show parallelism
HTTPS_PORT = 58543
BASE_IMAGE = "python:3.12-slim"
ENV = {
    "APP_TAG": "bench",
    "EDGE_NETWORK_PREFIX": "172.30.253",
    "RATE_LIMIT_AVERAGE": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "BENCH_HTTPS_PORT": str(HTTPS_PORT),
}
API_IMAGE = "fastapi-kit-api:bench"
WORKER_IMAGE = "fastapi-kit-worker:bench"
PROXY = f"https://127.0.0.1:{HTTPS_PORT}"
PROXY_HEADERS = {"Host": "api.localhost"}
TUTORIAL_CONTAINER = "kit-bench-tutorial"
BARE_CONTAINER = "kit-bench-bare"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def ratio(a: float, b: float) -> float:
    return round(a / b, 2)


# ---------------------------------------------------------------- figures ---------------------
@dataclass(frozen=True)
class Wrk:
    """One wrk run."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass(frozen=True)
class Measured(Wrk):
    """A wrk run against the kit, with the database connections the api opened meanwhile."""

    db_connections_opened: int


@dataclass(frozen=True)
class Memory:
    """Average RSS and PSS (shared pages split between sharers) of the gunicorn workers, MiB."""

    workers: int
    rss_mib: float
    pss_mib: float


# ---------------------------------------------------------------- wrk -------------------------
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return round(float(number) * _UNITS[unit], 3)


def wrk(
    url: str,
    *,
    script: str | None = None,
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    seconds: int = SECONDS,
) -> Wrk:
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    if script:
        args += ["-s", str(ROOT / "bench" / "wrk" / script)]
    out = run([*args, url], env={**os.environ, **(env or {})}, timeout=seconds + 60).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, flags=re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Wrk(
        rps=round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        errors=errors + (int(non_2xx.group(1)) if non_2xx else 0),
    )


# ---------------------------------------------------------------- helpers ---------------------
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

    project: str = "kit-bench"
    files: tuple[str, ...] = ("compose.yaml", "bench/compose.bench.yaml")
    env: dict[str, str] = field(default_factory=lambda: dict(ENV))

    def psql(self, sql: str) -> str:
        return self.compose(
            "exec",
            "-T",
            "db",
            "sh",
            "-c",
            f'psql -qtA -U "$POSTGRES_USER" "$POSTGRES_DB" -c "{sql}"',
        ).stdout.strip()

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
def baseline_container(stack: BenchStack, name: str, *command: str) -> Iterator[str]:
    """A baseline app in the api image, with the api's worker count; its URL for the block, and
    the container removed afterwards, whatever happens."""
    run(["docker", "rm", "-f", name], check=False)
    try:
        run(
            [
                "docker",
                "run",
                "-d",
                "--name",
                name,
                "-p",
                "127.0.0.1::8000",
                "-e",
                f"WEB_CONCURRENCY={stack.web_concurrency()}",
                "-v",
                f"{ROOT / 'bench'}:/app/bench:ro",
                API_IMAGE,
                *command,
            ]
        )
        port = run(["docker", "port", name, "8000/tcp"]).stdout.split(":")[-1].strip()
        wait_http(f"http://127.0.0.1:{port}/health")
        yield container_url(name, f"http://127.0.0.1:{port}")
    finally:
        run(["docker", "rm", "-f", name], check=False)


def raise_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled, `kill`) unwinds like Ctrl-C, so the cleanups run."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


# ---------------------------------------------------------------- the phases -------------------
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


@dataclass(frozen=True)
class KitRow:
    figures: Measured
    # The same shape in the tutorial app, measured right after; None: no pair (via proxy).
    tutorial_rps: float | None = None


@dataclass(frozen=True)
class Requests:
    rows: dict[str, KitRow]  # the request scenarios, in table order
    tutorial: dict[str, Wrk]  # baseline (a), by endpoint shape
    jobs_per_second: float


# The tutorial's request of the same shape as each kit request, and its row in the baselines
# table. The tutorial has one stretch of items and no cache: its item_db pair is its item read.
TUTORIAL_SAME_SHAPE: dict[str, tuple[str, str, dict[str, Any]]] = {
    "health": ("health", "/health", {}),
    "item_cached": ("item", "/items/1", {}),
    "item_db": ("item", "/items/1", {}),
    "items_page": ("items_page", "/items?limit=20", {}),
    "create_item": ("create_item", "/items", {"script": "create_item.lua"}),
}


def request_scenarios(stack: BenchStack, seeded: Seeded) -> Requests:
    log("kit scenarios, each followed at once by the same shape in the tutorial app")
    rows: dict[str, KitRow] = {}
    tutorial_rows: dict[str, Wrk] = {}
    # Baseline (a): uvicorn, one process, an in-memory list. Measured right after each kit row,
    # so both see the same machine: the noise here drifts over minutes.
    with baseline_container(
        stack,
        TUTORIAL_CONTAINER,
        "uvicorn",
        "bench.tutorial_app:app",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ) as tutorial:
        for name, (target, options) in kit_requests(
            seeded.url, seeded.first_id, seeded.token
        ).items():
            if name == "item_db":
                stack.flush_cache()
            figures = stack.measured(target, **options)
            shape, path, tutorial_options = TUTORIAL_SAME_SHAPE[name]
            paired = wrk(f"{tutorial}{path}", **tutorial_options)
            rows[name] = KitRow(figures, tutorial_rps=paired.rps)
            tutorial_rows.setdefault(shape, paired)
    rows["health_via_proxy"] = KitRow(stack.measured(f"{PROXY}/health", headers=PROXY_HEADERS))
    rows["item_cached_via_proxy"] = KitRow(
        stack.measured(f"{PROXY}/items/{seeded.first_id}", headers=PROXY_HEADERS)
    )
    jobs_per_second = stack.submit_jobs(seeded.url, seeded.token)
    return Requests(rows=rows, tutorial=tutorial_rows, jobs_per_second=jobs_per_second)


@dataclass(frozen=True)
class BareBaselines:
    uvloop_httptools: Wrk  # baseline (b): the ceiling
    asyncio_h11: Wrk


def bare_baselines(stack: BenchStack) -> BareBaselines:
    log("baseline (b): a bare ASGI app under the kit's gunicorn settings")
    gunicorn = ("gunicorn", "--config=python:api.gunicorn_conf")
    with baseline_container(stack, BARE_CONTAINER, *gunicorn, "bench.bare_asgi:app") as bare:
        uvloop_httptools = wrk(f"{bare}/health")
    log("tuning: the same bare app on asyncio + h11 instead of uvloop + httptools")
    h11 = "--worker-class=uvicorn_worker.UvicornH11Worker"
    with baseline_container(stack, BARE_CONTAINER, *gunicorn, h11, "bench.bare_asgi:app") as plain:
        asyncio_h11 = wrk(f"{plain}/health")
    return BareBaselines(uvloop_httptools=uvloop_httptools, asyncio_h11=asyncio_h11)


@dataclass(frozen=True)
class Tuning:
    connection_close: Wrk  # /health, a new connection per request
    memory_preload: Memory  # fresh container, after a warm-up
    reference: Wrk  # cached item, default settings, fresh container
    reference_page: Measured  # items page, same
    access_log_off: Wrk  # cached item, LOG_LEVEL=warning
    pool_overflow_5_5: Measured  # items page, DB_POOL_SIZE=5 DB_MAX_OVERFLOW=5


def tuning_rows(stack: BenchStack, seeded: Seeded) -> Tuning:
    log("tuning: client keep-alive")
    # What keep-alive saves: wrk opening a new TCP connection for every request instead.
    connection_close = wrk(f"{seeded.url}/health", headers={"Connection": "close"})

    log("tuning: settings, each on a fresh api container")
    item, page = f"/items/{seeded.first_id}", f"/items?limit=20&after={seeded.first_id}"
    # Memory with and without preload (scaling_rows), each from a fresh container after the same
    # warm-up.
    stack.recreate("api")
    fresh = stack.api_url()
    wrk(f"{fresh}{item}", seconds=2)
    memory_preload = stack.worker_memory()
    # The reference for the rows here and in scaling_rows, measured next to them rather than
    # minutes earlier.
    reference = wrk(f"{fresh}{item}")
    reference_page = stack.measured(f"{fresh}{page}")
    stack.recreate("api", LOG_LEVEL="warning")
    access_log_off = wrk(f"{stack.api_url()}{item}")
    # Pool: the old default (5 + 5 overflow) against the default (10 + 0), on the page.
    stack.recreate("api", DB_POOL_SIZE="5", DB_MAX_OVERFLOW="5")
    pool_overflow_5_5 = stack.measured(f"{stack.api_url()}{page}")
    return Tuning(
        connection_close=connection_close,
        memory_preload=memory_preload,
        reference=reference,
        reference_page=reference_page,
        access_log_off=access_log_off,
        pool_overflow_5_5=pool_overflow_5_5,
    )


@dataclass(frozen=True)
class Scaling:
    default_workers: int
    one_worker: Wrk  # cached item, WEB_CONCURRENCY=1
    memory_no_preload: Memory
    one_celery_jobs_per_second: float
    two_replicas: Wrk  # cached item via the proxy, api scaled to 2


def scaling_rows(stack: BenchStack, seeded: Seeded) -> Scaling:
    log("scaling")
    item = f"/items/{seeded.first_id}"
    default_workers = stack.web_concurrency()
    stack.recreate("api", WEB_CONCURRENCY="1")
    one_worker = wrk(f"{stack.api_url()}{item}")
    stack.recreate("api", GUNICORN_PRELOAD_APP="false")
    wrk(f"{stack.api_url()}{item}", seconds=2)  # warm every worker
    memory_no_preload = stack.worker_memory()
    stack.recreate("api")
    stack.recreate("worker", CELERY_CONCURRENCY="1")
    one_celery = stack.submit_jobs(stack.api_url(), seeded.token)
    stack.recreate("worker")
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=2", "api")
    time.sleep(3)  # Traefik picks up the second replica
    two_replicas = wrk(f"{PROXY}{item}", headers=PROXY_HEADERS)
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=1", "api")
    return Scaling(
        default_workers=default_workers,
        one_worker=one_worker,
        memory_no_preload=memory_no_preload,
        one_celery_jobs_per_second=one_celery,
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


@dataclass(frozen=True)
class Machine:
    cpus: int | None
    cpu: str
    memory_gib: float | None
    kernel: str
    docker_engine: str
    date: str
    wrk: str
    target: str


def machine() -> Machine:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    engine = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    return Machine(
        cpus=os.cpu_count(),
        cpu=cpu.group(1) if cpu else platform.processor(),
        memory_gib=round(int(mem.group(1)) / 2**20, 1) if mem else None,
        kernel=platform.release(),
        docker_engine=engine,
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        wrk=f"-t2 -c{CONNECTIONS} -d{SECONDS}s",
        target="container addresses on their Docker networks (no docker-proxy)",
    )


# ---------------------------------------------------------------- the results -----------------
@dataclass(frozen=True)
class Results:
    requests: Requests
    bare: BareBaselines
    tuning: Tuning
    scaling: Scaling
    startup: Startup
    images: Images
    rebuild_seconds: float
    duration_seconds: int
    machine: Machine

    # The ratios, derived from the figures above.
    def vs_tutorial(self, row: KitRow) -> float | None:
        return ratio(row.figures.rps, row.tutorial_rps) if row.tutorial_rps else None

    def vs_ceiling(self, row: KitRow) -> float:
        return ratio(row.figures.rps, self.bare.uvloop_httptools.rps)

    @property
    def keep_alive_rps(self) -> float:
        return self.requests.rows["health"].figures.rps

    @property
    def one_replica_rps(self) -> float:
        return self.requests.rows["item_cached_via_proxy"].figures.rps

    @property
    def uvloop_httptools_vs_asyncio_h11(self) -> float:
        return ratio(self.bare.uvloop_httptools.rps, self.bare.asyncio_h11.rps)

    @property
    def keep_alive_ratio(self) -> float:
        return ratio(self.keep_alive_rps, self.tuning.connection_close.rps)

    @property
    def access_log_off_vs_on(self) -> float:
        return ratio(self.tuning.access_log_off.rps, self.tuning.reference.rps)

    @property
    def pool_ratio(self) -> float:
        return ratio(self.tuning.reference_page.rps, self.tuning.pool_overflow_5_5.rps)

    @property
    def web_concurrency_ratio(self) -> float:
        return ratio(self.tuning.reference.rps, self.scaling.one_worker.rps)

    @property
    def celery_concurrency_ratio(self) -> float:
        return ratio(self.requests.jobs_per_second, self.scaling.one_celery_jobs_per_second)

    @property
    def replicas_ratio(self) -> float:
        return ratio(self.scaling.two_replicas.rps, self.one_replica_rps)

    @property
    def image_overhead_mib(self) -> float:
        return round(self.images.api - self.images.base, 1)


def as_json(r: Results) -> dict[str, Any]:
    """The layout of bench-results/bench.json."""
    scenarios: dict[str, Any] = {}
    for name, row in r.requests.rows.items():
        figures = asdict(row.figures)
        if row.tutorial_rps is not None:
            figures["tutorial_rps"] = row.tutorial_rps
        figures["vs_tutorial"] = r.vs_tutorial(row)
        figures["vs_bare_ceiling"] = r.vs_ceiling(row)
        scenarios[name] = figures
    scenarios["jobs"] = {"jobs_per_second": r.requests.jobs_per_second, "cost": JOB_COST}
    page = r.tuning.reference_page
    return {
        "scenarios": scenarios,
        "baselines": {
            "tutorial": {shape: asdict(f) for shape, f in r.requests.tutorial.items()},
            "bare_asgi": {"health": asdict(r.bare.uvloop_httptools)},
            "bare_asgi_h11_asyncio": {"health": asdict(r.bare.asyncio_h11)},
        },
        "scaling": {
            "web_concurrency": {
                "default": r.scaling.default_workers,
                "default_rps": r.tuning.reference.rps,
                "one_rps": r.scaling.one_worker.rps,
                "ratio": r.web_concurrency_ratio,
            },
            "celery_concurrency": {
                "default_jobs_per_second": r.requests.jobs_per_second,
                "one_jobs_per_second": r.scaling.one_celery_jobs_per_second,
                "ratio": r.celery_concurrency_ratio,
            },
            "api_replicas": {
                "one_rps": r.one_replica_rps,
                "two_rps": r.scaling.two_replicas.rps,
                "ratio": r.replicas_ratio,
            },
        },
        "operations": {
            "memory_per_worker_preload": asdict(r.tuning.memory_preload),
            "memory_per_worker_no_preload": asdict(r.scaling.memory_no_preload),
            **asdict(r.startup),
            "image_mib": asdict(r.images),
            "image_overhead_mib": r.image_overhead_mib,
            "rebuild_after_code_change_seconds": r.rebuild_seconds,
        },
        "tuning": {
            "uvloop_httptools_vs_asyncio_h11": r.uvloop_httptools_vs_asyncio_h11,
            "keep_alive": {
                "close_rps": r.tuning.connection_close.rps,
                "keep_alive_rps": r.keep_alive_rps,
                "ratio": r.keep_alive_ratio,
            },
            "app_access_log_off_vs_on": r.access_log_off_vs_on,
            "pool": {
                "overflow_5_5": asdict(r.tuning.pool_overflow_5_5),
                "default": {
                    "rps": page.rps,
                    "p99_ms": page.p99_ms,
                    "db_connections_opened": page.db_connections_opened,
                },
                "ratio": r.pool_ratio,
            },
        },
        "duration_seconds": r.duration_seconds,
        "machine": asdict(r.machine),
    }


def markdown(r: Results) -> str:
    m = r.machine
    lines = [
        "# Benchmarks",
        "",
        f"Measured with `make bench` on {m.date}: {m.cpus} CPUs ({m.cpu}), "
        f"{m.memory_gib} GiB, kernel {m.kernel}, Docker Engine {m.docker_engine}. "
        f"Load: wrk {m.wrk} from this host, to {m.target}. "
        f"The whole run took {r.duration_seconds} s.",
        "",
        "Every figure comes with a baseline measured in the same run, because these machines are "
        "noisy: compare the ratios, not the absolute numbers, across machines. Re-measure with "
        "`make bench`; the raw figures are in `bench-results/bench.json`.",
        "",
        "## Requests",
        "",
        "Kit scenarios hit the api container directly (plain HTTP, like the baselines, at its "
        "address on the edge network: a published loopback port would add docker-proxy, a "
        "userland copy that production traffic never takes); `via proxy` rows go "
        "through Traefik over HTTPS. `vs tutorial`: the same endpoint shape in the single-process "
        "tutorial app (uvicorn, one worker, items in a list), measured right after the kit's row. `vs ceiling`: a bare ASGI app under "
        "the kit's gunicorn settings. Errors in the direct rows are keep-alive connections closed "
        "when gunicorn recycles a worker after MAX_REQUESTS (the tutorial app never recycles); "
        "through Traefik its retry middleware sends those requests again, so `via proxy` rows "
        "show none. `db connections opened`: connections PostgreSQL accepted during the row (each "
        "one a TCP handshake and a password exchange): the pools fill during the first database "
        "row (10 per worker), a worker recycled after MAX_REQUESTS fills its own again, and "
        "otherwise a pool opens none.",
        "",
        "| scenario | req/s | p50 ms | p99 ms | errors | db connections opened | vs tutorial "
        "| vs ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in r.requests.rows.items():
        f = row.figures
        lines.append(
            f"| {name} | {f.rps} | {f.p50_ms} | {f.p99_ms} | {f.errors} "
            f"| {f.db_connections_opened} | {r.vs_tutorial(row) or '-'} "
            f"| {r.vs_ceiling(row)} |"
        )
    baselines = [
        *(("tutorial", shape, f) for shape, f in r.requests.tutorial.items()),
        ("bare_asgi", "health", r.bare.uvloop_httptools),
        ("bare_asgi_h11_asyncio", "health", r.bare.asyncio_h11),
    ]
    lines += [
        "",
        f"Jobs: **{r.requests.jobs_per_second} jobs/s** at a cost of {JOB_COST} "
        "SHA-256 rounds each, from submission to the last result.",
        "",
        "## Baselines",
        "",
        "| baseline | endpoint | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for baseline, endpoint, f in baselines:
        lines.append(
            f"| {baseline} | {endpoint} | {f.rps} | {f.p50_ms} | {f.p99_ms} | {f.errors} |"
        )
    s, t = r.scaling, r.tuning
    lines += [
        "",
        "## Scaling",
        "",
        "| what | 1 | default | ratio |",
        "|---|---:|---:|---:|",
        f"| WEB_CONCURRENCY (default {s.default_workers}), cached item req/s "
        f"| {s.one_worker.rps} | {t.reference.rps} | {r.web_concurrency_ratio} |",
        f"| CELERY_CONCURRENCY, jobs/s | {s.one_celery_jobs_per_second} "
        f"| {r.requests.jobs_per_second} | {r.celery_concurrency_ratio} |",
        f"| api replicas 1 → 2, cached item via proxy req/s | {r.one_replica_rps} "
        f"| {s.two_replicas.rps} | {r.replicas_ratio} |",
    ]
    page, overflow = t.reference_page, t.pool_overflow_5_5
    lines += [
        "",
        "## Tuning",
        "",
        "| change | ratio |",
        "|---|---:|",
        "| uvloop + httptools (the kit) vs asyncio + h11, bare app req/s | "
        f"{r.uvloop_httptools_vs_asyncio_h11} |",
        f"| app access log off (LOG_LEVEL=warning) vs on, cached item req/s | {r.access_log_off_vs_on} |",
        f"| client keep-alive vs a new connection per request, /health req/s | {r.keep_alive_ratio} |",
        f"| pool 10 + 0 overflow (default) vs 5 + 5, page req/s (p99 {page.p99_ms} "
        f"vs {overflow.p99_ms} ms; connections opened "
        f"{page.db_connections_opened} vs "
        f"{overflow.db_connections_opened}) | {r.pool_ratio} |",
    ]
    o, images = r.startup, r.images
    pre, nopre = t.memory_preload, s.memory_no_preload
    lines += [
        "",
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
        f"| image overhead over the base (shared by both) | {r.image_overhead_mib} MiB |",
        f"| memory per gunicorn worker, preload: RSS / PSS | {pre.rss_mib} / {pre.pss_mib} MiB |",
        f"| memory per gunicorn worker, no preload: RSS / PSS | {nopre.rss_mib} / "
        f"{nopre.pss_mib} MiB |",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------- the run ---------------------
def measure() -> Results:
    """Every phase, in order, on a stack that is taken down at the end whatever happens."""
    started = time.monotonic()
    stack = BenchStack()
    log("building and starting the stack")
    with running(stack):
        wait_http(f"{PROXY}/ready", headers=PROXY_HEADERS)
        seeded = seed(stack)
        requests = request_scenarios(stack, seeded)
        bare = bare_baselines(stack)
        tuning = tuning_rows(stack, seeded)
        scaling = scaling_rows(stack, seeded)
        startup = startup_timing(stack)
        images = image_sizes()
        rebuild = rebuild_seconds(stack)
    return Results(
        requests=requests,
        bare=bare,
        tuning=tuning,
        scaling=scaling,
        startup=startup,
        images=images,
        rebuild_seconds=rebuild,
        duration_seconds=round(time.monotonic() - started),
        machine=machine(),
    )


def main() -> None:
    raise_on_sigterm()
    results = measure()
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(as_json(results), indent=2))
    report = markdown(results)
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
