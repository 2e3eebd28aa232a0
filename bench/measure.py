"""One whole bench run: every chosen phase, in order, on a stack that is always taken down, with
the baseline containers removed at the end of theirs. Importing this module starts nothing."""

from __future__ import annotations

import os
import time

from bench.baselines import baselines, build_peer
from bench.config import GROUPS, HTTPS_PORT, PROXY_HEADERS, log
from bench.containers import wait_http
from bench.phases.operations import Images, Startup, image_sizes, rebuild_seconds, startup_timing
from bench.phases.requests import idle_cpu, request_rounds, seed, targets, warm_up
from bench.phases.scaling import Scaling, scaling_rows
from bench.phases.tracing import TracingCost, tracing_rows
from bench.phases.tuning import Tuning, tuning_rows
from bench.record import (
    RunInfo,
    command_line,
    git_commit,
    image_record,
    load_target,
    machine,
    other_containers,
)
from bench.results import Results, Row
from bench.stack import BenchStack, running


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
    idle_host: float | None = None
    tuning: Tuning | None = None
    scaling: Scaling | None = None
    tracing: TracingCost | None = None
    startup: Startup | None = None
    images: Images | None = None
    rebuild: float | None = None
    chosen = tuple(name for g in groups for name in GROUPS[g]) if "requests" in phases else ()
    if any(name.startswith("peer_") for name in chosen):
        log("building the template peer's image")
        build_peer()
    log("building and starting the stack")
    with running(stack):
        # The published port, reachable everywhere: stack.proxy_url() decides once it answers.
        wait_http(f"https://127.0.0.1:{HTTPS_PORT}/ready", headers=PROXY_HEADERS)
        record = image_record(stack)
        seeded = seed(stack)
        if chosen:
            with baselines(stack, chosen) as urls:
                every = targets(stack, seeded, urls)
                log("idle CPU of the host and each system under test, then a warm-up")
                measured_idle = idle_cpu(every, chosen)
                idle, idle_by_container = measured_idle.by_system, measured_idle.by_container
                idle_host = measured_idle.host
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
        if "tracing" in phases:
            tracing = tracing_rows(stack, seeded)
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
        machine=machine(load, others, load_target(stack.proxy_urls.values())),
        rows=rows,
        idle_cpu_ms_per_second=idle,
        idle_cpu_ms_per_second_by_container=idle_by_container,
        tuning=tuning,
        scaling=scaling,
        startup=startup,
        images=images,
        rebuild_seconds=rebuild,
        duration_seconds=round(time.monotonic() - started),
        idle_host_cpu_ms_per_second=idle_host,
        tracing=tracing,
    )
