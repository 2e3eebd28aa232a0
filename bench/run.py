"""make bench: throughput, latency, start-up, size and scaling of the kit, each against baselines
measured in the same run on the same machine.

Load comes from wrk on this host. Prints a table and writes the same figures to
bench-results/bench.json and docs/benchmarks.md. Takes about 6 minutes on 2 cores.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.stack import Stack, run  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "32"))
SEED_ITEMS = 50_000
JOBS, JOB_COST = 24, 300_000  # ~0.5 s of CPU each: enough to show parallelism
HTTPS_PORT = 58543
BASE_IMAGE = "python:3.12-slim"
ENV = {
    "APP_TAG": "bench",
    "EDGE_SUBNET": "172.30.253.0/24",
    "RATE_LIMIT_AVERAGE": "1000000",
    "RATE_LIMIT_BURST": "1000000",
    "BENCH_HTTPS_PORT": str(HTTPS_PORT),
}

stack = Stack(project="kit-bench", files=("compose.yaml", "bench/compose.bench.yaml"), env=ENV)
API_IMAGE = "fastapi-kit-api:bench"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- wrk -------------------------
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()
    return round(float(number) * _UNITS[unit], 3)


def measured(url: str, **kwargs: Any) -> dict[str, float]:
    """wrk against the kit, with the database connections the api opened meanwhile."""
    before = db_sessions()
    figures = wrk(url, **kwargs)
    # Less the one psql opened to ask.
    figures["db_connections_opened"] = db_sessions() - before - 1
    return figures


def wrk(
    url: str,
    *,
    script: str | None = None,
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    seconds: int = SECONDS,
) -> dict[str, float]:
    args = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "5s"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    if script:
        args += ["-s", str(ROOT / "bench" / "wrk" / script)]
    out = subprocess.run(
        [*args, url], capture_output=True, text=True, check=True, env={**os.environ, **(env or {})}
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, flags=re.M))
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), 1),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "errors": errors + (int(non_2xx.group(1)) if non_2xx else 0),
    }


# ---------------------------------------------------------------- helpers ---------------------
def wait_http(url: str, within: float = 60, **kwargs: Any) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within:
        try:
            if httpx.get(url, timeout=1, verify=False, **kwargs).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise TimeoutError(url)


def container_url(container: str, published: str) -> str:
    """The container's own address: the host reaches bridge networks directly. A published
    loopback port goes through docker-proxy, a userland copy that cost about a fifth of the
    machine here and that production traffic never takes (Traefik reaches the api over the edge
    network). Where the address is not reachable (Docker Desktop), the published port."""
    addresses = run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
            container,
        ]
    ).stdout.split()
    for address in addresses:
        url = f"http://{address}:8000"
        try:
            httpx.get(f"{url}/health", timeout=1)
            return url
        except httpx.HTTPError:
            continue
    return published


def api_url() -> str:
    published = f"http://127.0.0.1:{stack.published_port('api', 8000)}"
    return container_url(stack.container_ids("api")[0], published)


def db_sessions() -> int:
    """Connections PostgreSQL has accepted so far: the difference over a run is the connections
    the api had to open (and authenticate) during it."""
    return int(psql("SELECT sessions FROM pg_stat_database WHERE datname = current_database()"))


def psql(sql: str) -> str:
    return stack.compose(
        "exec", "-T", "db", "sh", "-c", f'psql -qtA -U "$POSTGRES_USER" "$POSTGRES_DB" -c "{sql}"'
    ).stdout.strip()


def flush_cache() -> None:
    stack.compose("exec", "-T", "redis", "redis-cli", "-n", "0", "FLUSHDB")


def seed_items() -> int:
    """SEED_ITEMS rows in the database; returns the first one's id."""
    psql(
        f"INSERT INTO items (name, description, price_cents) SELECT 'seed-' || g, 'seeded', g "
        f"FROM generate_series(1, {SEED_ITEMS}) g"
    )
    return int(psql("SELECT min(id) FROM items"))


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


def baseline_container(name: str, *command: str) -> str:
    run(["docker", "rm", "-f", name], check=False)
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
            f"WEB_CONCURRENCY={web_concurrency()}",
            "-v",
            f"{ROOT / 'bench'}:/app/bench:ro",
            API_IMAGE,
            *command,
        ]
    )
    port = run(["docker", "port", name, "8000/tcp"]).stdout.split(":")[-1].strip()
    wait_http(f"http://127.0.0.1:{port}/health")
    return container_url(name, f"http://127.0.0.1:{port}")


def web_concurrency() -> int:
    api = stack.container_ids("api")[0]
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


def submit_jobs(url: str, token: str) -> float:
    """Jobs per second at a fixed cost: submit JOBS at once, time until the last one finished."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=10) as client:
        started = time.monotonic()
        locations = [
            client.post("/jobs", json={"cost": JOB_COST}).headers["location"] for _ in range(JOBS)
        ]
        pending = set(locations)
        while pending:
            pending = {loc for loc in pending if client.get(loc).json()["state"] != "succeeded"}
            if time.monotonic() - started > 300:
                raise TimeoutError("jobs did not finish")
            time.sleep(0.1)
        return round(JOBS / (time.monotonic() - started), 2)


def worker_memory() -> dict[str, float]:
    """Average RSS and PSS (shared pages split between sharers) of the gunicorn workers, MiB."""
    api = stack.container_ids("api")[0]
    code = (
        "import os,re\n"
        "rows=[]\n"
        "for p in filter(str.isdigit, os.listdir('/proc')):\n"
        "    if p == '1' or open(f'/proc/{p}/stat').read().split()[3] != '1': continue\n"
        "    t=open(f'/proc/{p}/smaps_rollup').read()\n"
        "    rows.append([int(re.search(k+r':\\s+(\\d+)',t).group(1)) for k in ('Rss','Pss')])\n"
        "print(len(rows), sum(r[0] for r in rows)/len(rows)/1024, sum(r[1] for r in rows)/len(rows)/1024)\n"
    )
    n, rss, pss = run(["docker", "exec", api, "python", "-c", code]).stdout.split()
    return {"workers": int(n), "rss_mib": round(float(rss), 1), "pss_mib": round(float(pss), 1)}


def recreate(service: str, **env: str) -> None:
    stack.compose("up", "-d", "--wait", "--no-deps", "--force-recreate", service, **env)


def image_mib(ref: str) -> float:
    return round(int(run(["docker", "image", "inspect", "-f", "{{.Size}}", ref]).stdout) / 2**20, 1)


# ---------------------------------------------------------------- the run ---------------------
def main() -> dict[str, Any]:
    results: dict[str, Any] = {"scenarios": {}, "baselines": {}, "scaling": {}, "operations": {}}
    scenarios, baselines = results["scenarios"], results["baselines"]
    started = time.monotonic()

    log("building and starting the stack")
    stack.down()
    stack.up()
    proxy = f"https://127.0.0.1:{HTTPS_PORT}"
    proxy_headers = {"Host": "api.localhost"}
    wait_http(f"{proxy}/ready", headers=proxy_headers)

    log(f"seeding {SEED_ITEMS} items")
    first_id = seed_items()
    token = stack.compose("exec", "-T", "api", "python", "-m", "api.token", "bench").stdout.strip()
    url = api_url()
    httpx.get(f"{url}/items/{first_id}")  # cached from here on

    log("kit scenarios, each followed at once by the same shape in the tutorial app")
    # Baseline (a): uvicorn, one process, an in-memory list. Measured right after each kit row,
    # so both see the same machine: the noise here drifts over minutes.
    tutorial = baseline_container(
        "kit-bench-tutorial",
        "uvicorn",
        "bench.tutorial_app:app",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    )
    # The tutorial's request of the same shape, and its row in the baselines table. The
    # tutorial has one stretch of items and no cache: its item_db pair is its plain item read.
    same_shape = {
        "health": ("health", "/health", {}),
        "item_cached": ("item", "/items/1", {}),
        "item_db": ("item", "/items/1", {}),
        "items_page": ("items_page", "/items?limit=20", {}),
        "create_item": ("create_item", "/items", {"script": "create_item.lua"}),
    }
    tutorial_rows = baselines["tutorial"] = {}
    for name, (target, options) in kit_requests(url, first_id, token).items():
        if name == "item_db":
            flush_cache()
        scenarios[name] = measured(target, **options)
        shape, path, tutorial_options = same_shape[name]
        paired = wrk(f"{tutorial}{path}", **tutorial_options)
        scenarios[name]["tutorial_rps"] = paired["rps"]
        tutorial_rows.setdefault(shape, paired)
    run(["docker", "rm", "-f", "kit-bench-tutorial"], check=False)
    scenarios["health_via_proxy"] = measured(f"{proxy}/health", headers=proxy_headers)
    scenarios["item_cached_via_proxy"] = measured(
        f"{proxy}/items/{first_id}", headers=proxy_headers
    )
    scenarios["jobs"] = {"jobs_per_second": submit_jobs(url, token), "cost": JOB_COST}

    log("baseline (b): a bare ASGI app under the kit's gunicorn settings")
    bare = baseline_container(
        "kit-bench-bare", "gunicorn", "--config=python:api.gunicorn_conf", "bench.bare_asgi:app"
    )
    baselines["bare_asgi"] = {"health": wrk(f"{bare}/health")}
    run(["docker", "rm", "-f", "kit-bench-bare"], check=False)

    log("tuning: the same bare app on asyncio + h11 instead of uvloop + httptools")
    plain = baseline_container(
        "kit-bench-bare",
        "gunicorn",
        "--config=python:api.gunicorn_conf",
        "--worker-class=uvicorn_worker.UvicornH11Worker",
        "bench.bare_asgi:app",
    )
    baselines["bare_asgi_h11_asyncio"] = {"health": wrk(f"{plain}/health")}
    run(["docker", "rm", "-f", "kit-bench-bare"], check=False)
    results["tuning"] = {
        "uvloop_httptools_vs_asyncio_h11": round(
            baselines["bare_asgi"]["health"]["rps"]
            / baselines["bare_asgi_h11_asyncio"]["health"]["rps"],
            2,
        )
    }

    log("tuning: client keep-alive")
    # What keep-alive saves: wrk opening a new TCP connection for every request instead.
    closing = wrk(f"{url}/health", headers={"Connection": "close"})
    results["tuning"]["keep_alive"] = {
        "close_rps": closing["rps"],
        "keep_alive_rps": scenarios["health"]["rps"],
        "ratio": round(scenarios["health"]["rps"] / closing["rps"], 2),
    }

    log("ratios")
    ceiling = baselines["bare_asgi"]["health"]["rps"]
    for figures in scenarios.values():
        if "rps" not in figures:
            continue
        base = figures.get("tutorial_rps")
        figures["vs_tutorial"] = round(figures["rps"] / base, 2) if base else None
        figures["vs_bare_ceiling"] = round(figures["rps"] / ceiling, 2)

    log("scaling")
    default_workers = web_concurrency()
    # Memory with and without preload, each from a fresh container after the same warm-up.
    recreate("api")
    fresh = api_url()
    wrk(f"{fresh}/items/{first_id}", seconds=2)
    memory_preload = worker_memory()
    # The reference for the rows below, measured next to them rather than minutes earlier.
    reference = wrk(f"{fresh}/items/{first_id}")
    reference_page = measured(f"{fresh}/items?limit=20&after={first_id}")
    recreate("api", LOG_LEVEL="warning")
    quiet = wrk(f"{api_url()}/items/{first_id}")
    results["tuning"]["app_access_log_off_vs_on"] = round(quiet["rps"] / reference["rps"], 2)
    # Pool: the old default (5 + 5 overflow) against the default (10 + 0), on the page.
    recreate("api", DB_POOL_SIZE="5", DB_MAX_OVERFLOW="5")
    overflow_pool = measured(f"{api_url()}/items?limit=20&after={first_id}")
    results["tuning"]["pool"] = {
        "overflow_5_5": overflow_pool,
        "default": {k: reference_page[k] for k in ("rps", "p99_ms", "db_connections_opened")},
        "ratio": round(reference_page["rps"] / overflow_pool["rps"], 2),
    }
    recreate("api", WEB_CONCURRENCY="1")
    one = wrk(f"{api_url()}/items/{first_id}")
    recreate("api", GUNICORN_PRELOAD_APP="false")
    wrk(f"{api_url()}/items/{first_id}", seconds=2)  # warm every worker
    memory_no_preload = worker_memory()
    recreate("api")
    results["scaling"]["web_concurrency"] = {
        "default": default_workers,
        "default_rps": reference["rps"],
        "one_rps": one["rps"],
        "ratio": round(reference["rps"] / one["rps"], 2),
    }
    recreate("worker", CELERY_CONCURRENCY="1")
    jobs_one = submit_jobs(api_url(), token)
    recreate("worker")
    results["scaling"]["celery_concurrency"] = {
        "default_jobs_per_second": scenarios["jobs"]["jobs_per_second"],
        "one_jobs_per_second": jobs_one,
        "ratio": round(scenarios["jobs"]["jobs_per_second"] / jobs_one, 2),
    }
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=2", "api")
    time.sleep(3)  # Traefik picks up the second replica
    two = wrk(f"{proxy}/items/{first_id}", headers=proxy_headers)
    stack.compose("up", "-d", "--wait", "--no-recreate", "--scale", "api=1", "api")
    results["scaling"]["api_replicas"] = {
        "one_rps": scenarios["item_cached_via_proxy"]["rps"],
        "two_rps": two["rps"],
        "ratio": round(two["rps"] / scenarios["item_cached_via_proxy"]["rps"], 2),
    }

    log("operations")
    ops = results["operations"]
    ops["memory_per_worker_preload"] = memory_preload
    ops["memory_per_worker_no_preload"] = memory_no_preload
    stack.compose("down", "--timeout", "30")
    t = time.monotonic()
    stack.up(build=False)
    ops["up_wait_seconds"] = round(time.monotonic() - t, 1)
    api = stack.container_ids("api")[0]
    t = time.monotonic()
    run(["docker", "restart", api])
    # The published port: the container's address is probed for reachability, which fails while
    # the api is still starting. Everything from the restart to the first 200 is counted.
    wait_http(f"http://127.0.0.1:{stack.published_port('api', 8000)}/health")
    ops["api_restart_to_first_200_seconds"] = round(time.monotonic() - t, 1)
    stack.wait_healthy("api")
    ops["api_restart_to_healthy_seconds"] = round(time.monotonic() - t, 1)
    base = image_mib(BASE_IMAGE)
    ops["image_mib"] = {
        "base": base,
        "api": image_mib(API_IMAGE),
        "worker": image_mib("fastapi-kit-worker:bench"),
    }
    ops["image_overhead_mib"] = round(ops["image_mib"]["api"] - base, 1)
    marker = ROOT / "api" / "__init__.py"
    original = marker.read_text()
    try:
        marker.write_text(original + f"# bench {time.time()}\n")
        t = time.monotonic()
        stack.compose("build", "api")
        ops["rebuild_after_code_change_seconds"] = round(time.monotonic() - t, 1)
    finally:
        marker.write_text(original)
    stack.down()
    results["duration_seconds"] = round(time.monotonic() - started)
    return results


def machine() -> dict[str, Any]:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    mem = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    engine = run(["docker", "version", "--format", "{{.Server.Version}}"]).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu.group(1) if cpu else platform.processor(),
        "memory_gib": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "kernel": platform.release(),
        "docker_engine": engine,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "wrk": f"-t2 -c{CONNECTIONS} -d{SECONDS}s",
        "target": "container addresses on their Docker networks (no docker-proxy)",
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured with `make bench` on {m['date']}: {m['cpus']} CPUs ({m['cpu']}), "
        f"{m['memory_gib']} GiB, kernel {m['kernel']}, Docker Engine {m['docker_engine']}. "
        f"Load: wrk {m['wrk']} from this host, to {m['target']}. "
        f"The whole run took {results['duration_seconds']} s.",
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
    for name, f in results["scenarios"].items():
        if "rps" in f:
            lines.append(
                f"| {name} | {f['rps']} | {f['p50_ms']} | {f['p99_ms']} | {f['errors']} "
                f"| {f['db_connections_opened']} | {f.get('vs_tutorial') or '-'} "
                f"| {f['vs_bare_ceiling']} |"
            )
    jobs = results["scenarios"]["jobs"]
    lines += [
        "",
        f"Jobs: **{jobs['jobs_per_second']} jobs/s** at a cost of {jobs['cost']} "
        "SHA-256 rounds each, from submission to the last result.",
        "",
        "## Baselines",
        "",
        "| baseline | endpoint | req/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for baseline, endpoints in results["baselines"].items():
        for endpoint, f in endpoints.items():
            lines.append(
                f"| {baseline} | {endpoint} | {f['rps']} | {f['p50_ms']} | "
                f"{f['p99_ms']} | {f['errors']} |"
            )
    s = results["scaling"]
    lines += [
        "",
        "## Scaling",
        "",
        "| what | 1 | default | ratio |",
        "|---|---:|---:|---:|",
        f"| WEB_CONCURRENCY (default {s['web_concurrency']['default']}), cached item req/s "
        f"| {s['web_concurrency']['one_rps']} | {s['web_concurrency']['default_rps']} "
        f"| {s['web_concurrency']['ratio']} |",
        f"| CELERY_CONCURRENCY, jobs/s | {s['celery_concurrency']['one_jobs_per_second']} "
        f"| {s['celery_concurrency']['default_jobs_per_second']} "
        f"| {s['celery_concurrency']['ratio']} |",
        f"| api replicas 1 → 2, cached item via proxy req/s | {s['api_replicas']['one_rps']} "
        f"| {s['api_replicas']['two_rps']} | {s['api_replicas']['ratio']} |",
    ]
    pool = results["tuning"]["pool"]
    lines += [
        "",
        "## Tuning",
        "",
        "| change | ratio |",
        "|---|---:|",
        "| uvloop + httptools (the kit) vs asyncio + h11, bare app req/s | "
        f"{results['tuning']['uvloop_httptools_vs_asyncio_h11']} |",
        "| app access log off (LOG_LEVEL=warning) vs on, cached item req/s | "
        f"{results['tuning']['app_access_log_off_vs_on']} |",
        "| client keep-alive vs a new connection per request, /health req/s | "
        f"{results['tuning']['keep_alive']['ratio']} |",
        f"| pool 10 + 0 overflow (default) vs 5 + 5, page req/s (p99 {pool['default']['p99_ms']} "
        f"vs {pool['overflow_5_5']['p99_ms']} ms; connections opened "
        f"{pool['default']['db_connections_opened']} vs "
        f"{pool['overflow_5_5']['db_connections_opened']}) | {pool['ratio']} |",
    ]
    o = results["operations"]
    pre, nopre = o["memory_per_worker_preload"], o["memory_per_worker_no_preload"]
    lines += [
        "",
        "## Operations",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| `docker compose up --wait`, images built | {o['up_wait_seconds']} s |",
        f"| api restart to first 200 on /health | {o['api_restart_to_first_200_seconds']} s |",
        f"| api restart to healthy (HEALTHCHECK every 5 s) | {o['api_restart_to_healthy_seconds']} s |",
        f"| rebuild after a code-only change | {o['rebuild_after_code_change_seconds']} s |",
        f"| image: base `{BASE_IMAGE}` | {o['image_mib']['base']} MiB |",
        f"| image: api / worker | {o['image_mib']['api']} / {o['image_mib']['worker']} MiB |",
        f"| image overhead over the base (shared by both) | {o['image_overhead_mib']} MiB |",
        f"| memory per gunicorn worker, preload: RSS / PSS | {pre['rss_mib']} / {pre['pss_mib']} MiB |",
        f"| memory per gunicorn worker, no preload: RSS / PSS | {nopre['rss_mib']} / "
        f"{nopre['pss_mib']} MiB |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    figures = main()
    figures["machine"] = machine()
    out = ROOT / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "bench.json").write_text(json.dumps(figures, indent=2))
    report = markdown(figures)
    (ROOT / "docs").mkdir(exist_ok=True)
    (ROOT / "docs" / "benchmarks.md").write_text(report)
    print(report)
