"""The report: a run's results as docs/benchmarks.md, one function per section. Pure: no Docker,
no wrk."""

from __future__ import annotations

from bench import figures
from bench.config import BASE_IMAGE, IDLE_SECONDS, JOB_COST, JOBS
from bench.phases.scaling import Scaling
from bench.phases.tracing import DEFAULT_RATIO_GOAL, Traced, TracingCost, median_cpu
from bench.phases.tuning import Tuning
from bench.results import Compared, Results, Row


def _ratio(a: float, b: float) -> float:
    return round(a / b, 2)


def _bold_if(failed: bool, text: object) -> str:
    return f"**{text}**" if failed else str(text)


def _errors_cell(row: Row) -> str:
    e = row.socket_errors
    return "0" if not any(e.values()) else "/".join(str(e[k]) for k in e)


def header(r: Results) -> list[str]:
    m, info = r.machine, r.info
    dirty = " (with uncommitted changes: not a publishable run)" if info.uncommitted_changes else ""
    load_average = " ".join(map(str, m.load_average_before))
    lines = [
        "# Benchmarks",
        "",
        f"Commit `{info.commit}`{dirty}, measured on {m.date} with `{info.command}` "
        f"({info.rounds} rounds; the whole run took {r.duration_seconds} s).",
        "",
        f"Machine: {m.cpus} CPUs ({m.cpu}), {m.memory_gib} GiB, kernel {m.kernel}, Docker Engine "
        f"{m.docker_engine}; load average {load_average} at the start, "
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
    if r.kit_failures:
        lines += ["", "**FAILED: kit rows with failed requests** (the kit must have none):", ""]
        lines += [f"- {f}" for f in r.kit_failures]
    if r.baseline_problems:
        lines += ["", "**Baselines that measured nothing in a round:**", ""]
        lines += [f"- {p}" for p in r.baseline_problems]
    return lines


def how_to_read(r: Results) -> list[str]:
    return [
        "",
        "## How to read this",
        "",
        f"- Every request row ran {r.info.rounds} time(s), after one unmeasured warm-up run. A "
        "kit row and its baselines (its group) run back to back, in an order that rotates each "
        "round. Figures are the median over the rounds with the range (min..max) in brackets.",
        "- A ratio is the ratio of the medians, with the range of the per-round ratios (each "
        "round's two rows measured next to each other). **Noise rule:** a difference is inside "
        "the noise when its per-round ratios fall on both sides of 1.0; a goal is qualified "
        '"inside the noise" when they fall on both sides of the goal.',
        "- CPU µs/request: the whole host's CPU time over the row (its busy time in /proc/stat: "
        "user, nice, system, irq and softirq, read right before wrk starts and right after it "
        "exits) less wrk's own (its utime + stime), divided by the requests wrk completed. So it "
        "counts what serving the requests costs outside the containers too (dockerd and "
        "containerd-shim carrying the containers' log lines, the kernel's network work), and "
        "whatever else the host does meanwhile: its idle CPU (below) and one `docker top` per "
        "row counting the server's processes. On a machine where wrk does not share the cores, "
        "this is the figure that carries over. A container's own CPU (Traefik's in Tuning, the "
        f"idle CPU by system) is its counter ({r.machine.cgroup}).",
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


def goals(compared: list[Compared]) -> list[str]:
    chosen = [c for c in compared if c.comparison.goal is not None]
    if not chosen:
        return []
    lines = [
        "## Goals",
        "",
        "| goal | ratio (per-round range) | verdict |",
        "|---|---:|---|",
    ]
    for c in chosen:
        goal = c.comparison.goal
        assert goal is not None
        lines.append(
            f"| {c.comparison.row} ≥ {goal} x {c.comparison.baseline}: {c.comparison.what} "
            f"| {c.rps.show()} | {figures.goal_verdict(c.rps, goal)} |"
        )
    lines.append("")
    return lines


def _request_row(name: str, row: Row) -> str:
    p50 = row.spread(lambda s: s.wrk.p50_ms)
    p99 = row.spread(lambda s: s.wrk.p99_ms)
    cpu = row.cpu
    failed = bool(row.kit and row.failed_requests)
    non_2xx = row.total(lambda w: w.non_2xx)
    return (
        f"| {name} | {row.system} | {row.rps.show()} "
        f"| {p50.show(2) if p50 else '-'} | {p99.show(1) if p99 else '-'} "
        f"| {cpu.show(0) if cpu else '-'} "
        f"| {_bold_if(failed, _errors_cell(row))} | {_bold_if(failed, non_2xx)} "
        f"| {row.processes} | {row.db_connections_opened} |"
    )


def _idle(r: Results) -> list[str]:
    if not r.idle_cpu_ms_per_second:
        return []
    host = r.idle_host_cpu_ms_per_second
    by_system = ", ".join(
        f"{system} {'-' if v is None else v}" for system, v in r.idle_cpu_ms_per_second.items()
    )
    return [
        "",
        f"Idle CPU, ms per second ({IDLE_SECONDS} s before the rounds, nothing sent): the whole "
        f"host {'-' if host is None else host}; of it, each system under test's containers "
        f"{by_system} (by container in bench.json). The CPU column includes the host's: it "
        "matters only in rows that serve few requests.",
    ]


def requests(r: Results, compared: list[Compared]) -> list[str]:
    if not r.rows:
        return []
    lines = [
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
    lines += [_request_row(name, row) for name, row in r.rows.items()]
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
    lines += _idle(r)
    lines.append("")
    return lines


def scaling(s: Scaling) -> list[str]:
    return [
        "## Scaling",
        "",
        "One run each, the two sides measured next to each other: indicative, no spread.",
        "",
        "| what | 1 | default | ratio |",
        "|---|---:|---:|---:|",
        f"| WEB_CONCURRENCY (default {s.default_workers}), cached item req/s "
        f"| {s.one_worker.rps} | {s.default_worker_rps} "
        f"| {_ratio(s.default_worker_rps, s.one_worker.rps)} |",
        f"| CELERY_CONCURRENCY, jobs/s ({JOBS} jobs of {JOB_COST} SHA-256 rounds) "
        f"| {s.one_celery_jobs_per_second} | {s.jobs_per_second} "
        f"| {_ratio(s.jobs_per_second, s.one_celery_jobs_per_second)} |",
        f"| api replicas 1 → 2, cached item via proxy req/s | {s.one_replica.rps} "
        f"| {s.two_replicas.rps} | {_ratio(s.two_replicas.rps, s.one_replica.rps)} |",
        "",
    ]


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


def tuning(t: Tuning) -> list[str]:
    page, overflow = t.reference_page, t.pool_overflow_5_5
    return [
        "## Tuning",
        "",
        "One run each, the two sides measured next to each other: indicative, no spread; "
        "where a row says pairs, the ratio of the medians with the per-pair range.",
        "",
        "| change | ratio |",
        "|---|---:|",
        f"| app access log problems only (ACCESS_LOG default) vs every request, cached "
        f"item req/s | {_ratio(t.reference.rps, t.access_log_all.rps)} |",
        f"| Traefik access log errors only (PROXY_ACCESS_LOG_CODES=400-599) vs every request "
        f"(default), cached item via proxy req/s "
        f"| {_ratio(t.proxy_log_problems.rps, t.proxy_reference.rps)} |",
        *go_threads_row(t),
        f"| client keep-alive vs a new connection per request, /health req/s "
        f"| {_ratio(t.keep_alive.rps, t.connection_close.rps)} |",
        f"| pool 10 + 0 overflow (default) vs 5 + 5, page req/s (p99 {page.p99_ms} "
        f"vs {overflow.p99_ms} ms; connections opened {page.db_connections_opened} vs "
        f"{overflow.db_connections_opened}) | {_ratio(page.rps, overflow.rps)} |",
        "",
    ]


def _cpu(us: float | None) -> str:
    return "-" if us is None else f"{us} µs"


def tracing(t: TracingCost) -> list[str]:
    def row(name: str, rounds: tuple[Traced, ...]) -> str:
        cached = figures.spread([x.cached.rps for x in rounds])
        page = figures.spread([x.page.rps for x in rounds])
        jobs = figures.spread([x.jobs_per_second for x in rounds])
        cached_cpu = _cpu(median_cpu([x.cached_api_cpu_us for x in rounds]))
        page_cpu = _cpu(median_cpu([x.page_api_cpu_us for x in rounds]))
        return (
            f"| {name} | {cached.show(0)} | {cached_cpu} | {t.cached_of_off(rounds).show()} "
            f"| {page.show(0)} | {page_cpu} | {jobs.show(2)} |"
        )

    return [
        "## Tracing",
        "",
        "OpenTelemetry in the api and the worker (docs/observability.md, Traces), spans to the "
        f"profile's Jaeger; the api direct, {len(t.off)} rounds, the settings in rotating order: "
        "medians (range). CPU is the api container's per request, median.",
        "",
        "| tracing | cached item req/s | CPU | of off | page req/s | CPU | jobs/s |",
        "|---|---:|---:|---:|---:|---:|---:|",
        row("off (no endpoint: the default)", t.off),
        row(f"TRACING_SAMPLE_RATIO={t.default_ratio} (default ratio)", t.default),
        row("TRACING_SAMPLE_RATIO=1 (every trace)", t.every),
        "",
        f"Goal: the default ratio keeps at least {DEFAULT_RATIO_GOAL} of off's cached item "
        f"throughput: {t.default_verdict()}.",
        "",
    ]


def operations(r: Results) -> list[str]:
    o, images = r.startup, r.images
    if o is None or images is None:
        return []
    overhead = round(images.api - images.base, 1)
    lines = [
        "## Operations",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| `docker compose up --wait`, images built | {o.up_wait_seconds} s |",
        f"| api restart to first 200 on /health | {o.api_restart_to_first_200_seconds} s |",
        "| api restart to healthy (HEALTHCHECK every 5 s) "
        f"| {o.api_restart_to_healthy_seconds} s |",
        f"| rebuild after a code-only change | {r.rebuild_seconds} s |",
        f"| image: base `{BASE_IMAGE}` | {images.base} MiB |",
        f"| image: api / worker | {images.api} / {images.worker} MiB |",
        f"| image overhead over the base (shared by both) | {overhead} MiB |",
    ]
    if r.tuning is not None and r.scaling is not None:
        pre, nopre = r.tuning.memory_preload, r.scaling.memory_no_preload
        lines += [
            "| memory per gunicorn worker, preload: RSS / PSS "
            f"| {pre.rss_mib} / {pre.pss_mib} MiB |",
            f"| memory per gunicorn worker, no preload: RSS / PSS | {nopre.rss_mib} / "
            f"{nopre.pss_mib} MiB |",
        ]
    lines.append("")
    return lines


def markdown(r: Results) -> str:
    compared = r.compared
    lines = [*header(r), *how_to_read(r), *goals(compared), *requests(r, compared)]
    if r.scaling is not None:
        lines += scaling(r.scaling)
    if r.tuning is not None:
        lines += tuning(r.tuning)
    if r.tracing is not None:
        lines += tracing(r.tracing)
    lines += operations(r)
    return "\n".join(lines)
