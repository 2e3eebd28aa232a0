"""The tracing rows: what OpenTelemetry costs the api (the cached read and a database read, with
the api container's CPU per request) and the worker (jobs per second), tracing off, at the default
TRACING_SAMPLE_RATIO and at 1 (every trace kept), spans sent to the profile's Jaeger. One run each,
the settings measured next to each other: indicative, as the tuning rows. Importing this module
starts nothing."""

from __future__ import annotations

from dataclasses import dataclass

from bench import figures
from bench.config import WARMUP_SECONDS, log
from bench.containers import cpu_counter_files
from bench.figures import Wrk
from bench.phases.requests import Seeded
from bench.stack import BenchStack
from bench.wrk import wrk
from core.settings import Settings

JAEGER = "http://jaeger:4318"


@dataclass(frozen=True)
class Traced:
    """One setting's rows: cached item, a page from the database, jobs per second."""

    sample_ratio: float | None  # None: tracing off
    cached: Wrk
    cached_api_cpu_us: float | None  # the api container's CPU per request; None: no counter
    page: Wrk
    page_api_cpu_us: float | None
    jobs_per_second: float


@dataclass(frozen=True)
class TracingCost:
    default_ratio: float
    off: Traced
    default: Traced
    every: Traced  # TRACING_SAMPLE_RATIO=1

    def cached_rps_of_off(self, traced: Traced) -> float:
        return round(traced.cached.rps / self.off.cached.rps, 2)


def _with_api_cpu(stack: BenchStack, url: str) -> tuple[Wrk, float | None]:
    files = cpu_counter_files(stack.container_ids("api")[0])
    before = figures.read_cpu_counter(files)
    w = wrk(url)
    after = figures.read_cpu_counter(files)
    if before is None or after is None or not w.requests:
        return w, None
    return w, round((after - before) / w.requests, 1)


def _setting(stack: BenchStack, seeded: Seeded, ratio: float | None) -> Traced:
    # Both values always given, so neither comes from the shell or a .env.
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "" if ratio is None else JAEGER,
        "TRACING_SAMPLE_RATIO": "" if ratio is None else str(ratio),
    }
    log(f"tracing: {'off' if ratio is None else f'ratio {ratio}'}")
    stack.recreate("api", **env)
    stack.recreate("worker", **env)
    item = f"{stack.api_url()}/items/{seeded.first_id}"
    page = f"{stack.api_url()}/items?limit=20&after={seeded.first_id}"
    wrk(item, seconds=WARMUP_SECONDS)
    wrk(page, seconds=WARMUP_SECONDS)
    cached, cached_cpu = _with_api_cpu(stack, item)
    paged, page_cpu = _with_api_cpu(stack, page)
    jobs = stack.submit_jobs(stack.api_url(), seeded.token)
    return Traced(ratio, cached, cached_cpu, paged, page_cpu, jobs)


def tracing_rows(stack: BenchStack, seeded: Seeded) -> TracingCost:
    # Jaeger alone of the profile: the spans' receiver, as in production.
    stack.compose("up", "-d", "--wait", "--no-deps", "jaeger", JAEGER_PORT="56787")
    default = float(Settings.model_fields["tracing_sample_ratio"].default)
    rows = TracingCost(
        default_ratio=default,
        off=_setting(stack, seeded, None),
        default=_setting(stack, seeded, default),
        every=_setting(stack, seeded, 1.0),
    )
    off = {"OTEL_EXPORTER_OTLP_ENDPOINT": "", "TRACING_SAMPLE_RATIO": ""}
    stack.recreate("api", **off)
    stack.recreate("worker", **off)
    stack.compose("rm", "-sf", "jaeger")
    return rows
