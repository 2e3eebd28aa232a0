"""The tracing rows: what OpenTelemetry costs the api (the cached read and a database read, with
the api container's CPU per request) and the worker (jobs per second), tracing off, at the default
TRACING_SAMPLE_RATIO and at 1 (every trace kept), spans sent to the profile's Jaeger. BENCH_ROUNDS
rounds, the three settings in an order that rotates each round, so the default's share of off is
a ratio of figures measured next to each other, with its spread. Importing this module starts
nothing."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bench import figures
from bench.config import ROUNDS, WARMUP_SECONDS, log
from bench.containers import cpu_counter_files
from bench.figures import Ratio, Wrk
from bench.phases.requests import Seeded
from bench.stack import BenchStack
from bench.wrk import wrk
from core.settings import Settings

JAEGER = "http://jaeger:4318"
DEFAULT_RATIO = float(Settings.model_fields["tracing_sample_ratio"].default)
# The most the default ratio may cost the cached read (issue 28; docs/observability.md, Sampling).
DEFAULT_RATIO_MAX_COST = 0.10
DEFAULT_RATIO_GOAL = 1 - DEFAULT_RATIO_MAX_COST  # of off's throughput


@dataclass(frozen=True)
class Traced:
    """One setting's rows in one round: cached item, a page from the database, jobs per second."""

    sample_ratio: float | None  # None: tracing off
    cached: Wrk
    cached_api_cpu_us: float | None  # the api container's CPU per request; None: no counter
    page: Wrk
    page_api_cpu_us: float | None
    jobs_per_second: float


@dataclass(frozen=True)
class TracingCost:
    """Each setting's rounds, in round order."""

    default_ratio: float
    off: tuple[Traced, ...]
    default: tuple[Traced, ...]
    every: tuple[Traced, ...]  # TRACING_SAMPLE_RATIO=1

    def cached_of_off(self, rounds: tuple[Traced, ...]) -> Ratio:
        return figures.ratio([t.cached.rps for t in rounds], [t.cached.rps for t in self.off])

    def default_verdict(self) -> str:
        return figures.goal_verdict(self.cached_of_off(self.default), DEFAULT_RATIO_GOAL)


def median_cpu(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 1) if known else None


def _with_api_cpu(stack: BenchStack, url: str) -> tuple[Wrk, float | None]:
    files = cpu_counter_files(stack.container_ids("api")[0])
    before = figures.read_cpu_counter(files)
    w = wrk(url)
    after = figures.read_cpu_counter(files)
    if before is None or after is None or not w.requests:
        return w, None
    return w, round((after - before) / w.requests, 1)


def _setting(stack: BenchStack, seeded: Seeded, ratio: float | None, label: str) -> Traced:
    # Both values always given, so neither comes from the shell or a .env.
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "" if ratio is None else JAEGER,
        "TRACING_SAMPLE_RATIO": "" if ratio is None else str(ratio),
    }
    stack.recreate("api", **env)
    stack.recreate("worker", **env)
    item = f"{stack.api_url()}/items/{seeded.first_id}"
    page = f"{stack.api_url()}/items?limit=20&after={seeded.first_id}"
    wrk(item, seconds=WARMUP_SECONDS)
    wrk(page, seconds=WARMUP_SECONDS)
    cached, cached_cpu = _with_api_cpu(stack, item)
    paged, page_cpu = _with_api_cpu(stack, page)
    jobs = stack.submit_jobs(stack.api_url(), seeded.token)
    log(
        f"tracing {label}: cached {cached.rps} req/s, {cached_cpu} µs CPU/request; "
        f"page {paged.rps} req/s; {jobs} jobs/s"
    )
    return Traced(ratio, cached, cached_cpu, paged, page_cpu, jobs)


def tracing_rows(stack: BenchStack, seeded: Seeded, rounds: int = ROUNDS) -> TracingCost:
    stack.start_jaeger()
    settings: tuple[float | None, ...] = (None, DEFAULT_RATIO, 1.0)
    measured: dict[float | None, list[Traced]] = {s: [] for s in settings}
    for r in range(rounds):
        for i in range(len(settings)):
            ratio = settings[(r + i) % len(settings)]
            label = f"round {r + 1}/{rounds} {'off' if ratio is None else f'ratio {ratio}'}"
            measured[ratio].append(_setting(stack, seeded, ratio, label))
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "TRACING_SAMPLE_RATIO": ""}
    stack.recreate("api", **off)
    stack.recreate("worker", **off)
    stack.compose("rm", "-sf", "jaeger")
    return TracingCost(
        default_ratio=DEFAULT_RATIO,
        off=tuple(measured[None]),
        default=tuple(measured[DEFAULT_RATIO]),
        every=tuple(measured[1.0]),
    )
