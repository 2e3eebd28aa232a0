"""make bench: throughput, latency, start-up, size and scaling of the kit, each against baselines
measured in the same run on the same machine.

Load comes from wrk on loopback. Prints a table and writes the same figures to
bench-results/bench.json and docs/benchmarks.md. Takes about 7 minutes on 2 cores.
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
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, flags=re.M))
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


def api_url() -> str:
    return f"http://127.0.0.1:{stack.published_port('api', 8000)}"


def psql(sql: str) -> str:
    return stack.compose(
        "exec", "-T", "db", "sh", "-c", f'psql -qtA -U "$POSTGRES_USER" "$POSTGRES_DB" -c "{sql}"'
    ).stdout.strip()


def flush_cache() -> None:
    stack.compose("exec", "-T", "redis", "redis-cli", "-n", "0", "FLUSHDB")


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
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health")
    return url


def web_concurrency() -> int:
    api = stack.container_ids("api")[0]
    out = run(
        [
            "docker",
            "exec",
            api,
            "python",
            "-c",
            "from api.settings import get_settings; print(get_settings().workers)",
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
    psql(
        f"INSERT INTO items (name, description, price_cents) SELECT 'seed-' || g, 'seeded', g "
        f"FROM generate_series(1, {SEED_ITEMS}) g"
    )
    first_id = int(psql("SELECT min(id) FROM items"))
    token = stack.compose("exec", "-T", "api", "python", "-m", "api.token", "bench").stdout.strip()
    url = api_url()
    httpx.get(f"{url}/items/{first_id}")  # cached from here on

    log("kit scenarios")
    scenarios["health"] = wrk(f"{url}/health")
    scenarios["item_cached"] = wrk(f"{url}/items/{first_id}")
    flush_cache()
    scenarios["item_db"] = wrk(
        f"{url}/",
        script="walk_items.lua",
        env={"WALK_FIRST": str(first_id), "WALK_SPAN": str(SEED_ITEMS)},
    )
    scenarios["items_page"] = wrk(f"{url}/items?limit=20&after={first_id}")
    scenarios["create_item"] = wrk(
        f"{url}/items", script="create_item.lua", env={"BENCH_TOKEN": token}
    )
    scenarios["health_via_proxy"] = wrk(f"{proxy}/health", headers=proxy_headers)
    scenarios["item_cached_via_proxy"] = wrk(f"{proxy}/items/{first_id}", headers=proxy_headers)
    scenarios["jobs"] = {"jobs_per_second": submit_jobs(url, token), "cost": JOB_COST}

    log("baseline (a): the tutorial app, uvicorn, one process, an in-memory list")
    tutorial = baseline_container(
        "kit-bench-tutorial",
        "uvicorn",
        "bench.tutorial_app:app",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    )
    baselines["tutorial"] = {
        "health": wrk(f"{tutorial}/health"),
        "item": wrk(f"{tutorial}/items/1"),
        "items_page": wrk(f"{tutorial}/items?limit=20"),
        "create_item": wrk(f"{tutorial}/items", script="create_item.lua"),
    }
    run(["docker", "rm", "-f", "kit-bench-tutorial"], check=False)

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

    log("ratios")
    same_shape = {
        "health": "health",
        "item_cached": "item",
        "item_db": "item",
        "items_page": "items_page",
        "create_item": "create_item",
    }
    ceiling = baselines["bare_asgi"]["health"]["rps"]
    for name, figures in scenarios.items():
        if "rps" not in figures:
            continue
        base = baselines["tutorial"].get(same_shape.get(name, ""), {}).get("rps")
        figures["vs_tutorial"] = round(figures["rps"] / base, 2) if base else None
        figures["vs_bare_ceiling"] = round(figures["rps"] / ceiling, 2)

    log("scaling")
    default_workers = web_concurrency()
    # Memory with and without preload, each from a fresh container after the same warm-up.
    recreate("api")
    wrk(f"{api_url()}/items/{first_id}", seconds=2)
    memory_preload = worker_memory()
    recreate("api", LOG_LEVEL="warning")
    quiet = wrk(f"{api_url()}/items/{first_id}")
    results["tuning"]["app_access_log_off_vs_on"] = round(
        quiet["rps"] / scenarios["item_cached"]["rps"], 2
    )
    recreate("api", WEB_CONCURRENCY="1")
    one = wrk(f"{api_url()}/items/{first_id}")
    recreate("api", PRELOAD_APP="false")
    wrk(f"{api_url()}/items/{first_id}", seconds=2)  # warm every worker
    memory_no_preload = worker_memory()
    recreate("api")
    results["scaling"]["web_concurrency"] = {
        "default": default_workers,
        "default_rps": scenarios["item_cached"]["rps"],
        "one_rps": one["rps"],
        "ratio": round(scenarios["item_cached"]["rps"] / one["rps"], 2),
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
    ops["api_restart_to_first_200_seconds"] = round(
        time.monotonic() - t + wait_http(f"{api_url()}/health"), 1
    )
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
    }


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured with `make bench` on {m['date']}: {m['cpus']} CPUs ({m['cpu']}), "
        f"{m['memory_gib']} GiB, kernel {m['kernel']}, Docker Engine {m['docker_engine']}. "
        f"Load: wrk {m['wrk']} from loopback. The whole run took {results['duration_seconds']} s.",
        "",
        "Every figure comes with a baseline measured in the same run, because these machines are "
        "noisy: compare the ratios, not the absolute numbers, across machines. Re-measure with "
        "`make bench`; the raw figures are in `bench-results/bench.json`.",
        "",
        "## Requests",
        "",
        "Kit scenarios hit the api's own port (plain HTTP, like the baselines); `via proxy` rows go "
        "through Traefik over HTTPS. `vs tutorial`: the same endpoint shape in the single-process "
        "tutorial app (uvicorn, one worker, items in a list). `vs ceiling`: a bare ASGI app under "
        "the kit's gunicorn settings. Errors in the direct rows are keep-alive connections closed "
        "when gunicorn recycles a worker after MAX_REQUESTS (the tutorial app never recycles); "
        "through Traefik its retry middleware sends those requests again, so `via proxy` rows "
        "show none.",
        "",
        "| scenario | req/s | p50 ms | p99 ms | errors | vs tutorial | vs ceiling |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in results["scenarios"].items():
        if "rps" in f:
            lines.append(
                f"| {name} | {f['rps']} | {f['p50_ms']} | {f['p99_ms']} | {f['errors']} "
                f"| {f.get('vs_tutorial') or '-'} | {f['vs_bare_ceiling']} |"
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
