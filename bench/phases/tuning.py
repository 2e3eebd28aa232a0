"""The tuning rows: what each tunable gives, one run each (Traefik's Go threads: alternating
pairs), every ratio's two sides measured next to each other: indicative (the request rows carry
the claims). Importing this module starts nothing."""

from __future__ import annotations

from dataclasses import dataclass

from bench import figures
from bench.config import PROXY_HEADERS, WARMUP_SECONDS, log
from bench.containers import cpu_counter_files, engine_cpus
from bench.figures import Wrk
from bench.phases.requests import Seeded
from bench.stack import BenchStack, Measured, Memory
from bench.wrk import wrk


@dataclass(frozen=True)
class Proxied:
    """A row through the proxy, with Traefik's own CPU per request over it."""

    wrk: Wrk
    proxy_cpu_us: float | None  # None: no CPU counter from here (Docker Desktop)


def through_proxy(stack: BenchStack, url: str) -> Proxied:
    """wrk through the proxy, with its container's CPU counter read before and after."""
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
        return figures.ratio(
            [x for x in one if x is not None], [x for x in default if x is not None]
        )


def _warm_then(url: str) -> Wrk:
    """A fresh container warmed with one unmeasured run first, then measured."""
    wrk(url, headers=PROXY_HEADERS, seconds=WARMUP_SECONDS)
    return wrk(url, headers=PROXY_HEADERS)


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
    # freshly created proxy (whose edge address stack.proxy_url() looks up again).
    stack.recreate("proxy")
    proxy_reference = _warm_then(f"{stack.proxy_url()}{item}")
    stack.recreate("proxy", PROXY_ACCESS_LOG_CODES="400-599")
    proxy_log_problems = _warm_then(f"{stack.proxy_url()}{item}")
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
            url = f"{stack.proxy_url()}{item}"
            wrk(url, headers=PROXY_HEADERS, seconds=WARMUP_SECONDS)
            measured[threads] = through_proxy(stack, url)
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
