"""make bench-observability: what the observability profile costs, in one run on one stack.

1. Scrape cost: the api's throughput (wrk, GET /items/{id} cached, direct to one api container)
   with Prometheus stopped and running, alternated ROUNDS times (A B A B ...) so drift in the
   machine hits both; the ratio of the medians. Prometheus runs with the shipped configuration
   (15 s scrapes); BENCH_SCRAPE_INTERVAL scrapes faster, to make a cost visible at all.
2. Disk per day: Prometheus's own ingestion under that load (samples appended per second, head
   series), turned into bytes a day at the 1-2 bytes a sample that Prometheus's compressed blocks
   take (its storage documentation); also the WAL's growth measured over the run, an upper bound
   (the WAL is not compressed; blocks are cut every 2 h, longer than a bench run). Times the
   retention (PROMETHEUS_RETENTION_TIME, 15 d) that is the disk the profile needs.

Prints the figures; writes nothing. Run from the repository root: `python -m bench.observability`.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.config import NO_RATE_LIMIT
from bench.wrk import wrk
from core.settings import Settings
from tests.support import ROOT
from tests.support.auth import auth_headers
from tests.support.stack import Stack, container_url

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
PROMETHEUS_PORT = 59190
RETENTION_DAYS = 15
BYTES_PER_SAMPLE = (1.3, 2.0)


def log(message: str) -> None:
    print(f"bench-observability: {message}", file=sys.stderr, flush=True)


def prometheus_query(promql: str) -> float:
    body = httpx.get(
        f"http://127.0.0.1:{PROMETHEUS_PORT}/api/v1/query", params={"query": promql}, timeout=10
    ).json()
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else float("nan")


def wal_bytes(stack: Stack) -> int:
    out = stack.compose("exec", "-T", "prometheus", "du", "-sb", "/prometheus/wal").stdout
    return int(out.split()[0])


def main() -> None:
    config_dir = ROOT / "observability"
    scrape = os.environ.get("BENCH_SCRAPE_INTERVAL")
    if scrape:
        copy = Path(tempfile.mkdtemp(prefix="obs-bench-")) / "observability"
        shutil.copytree(config_dir, copy)
        text = (copy / "prometheus.yml").read_text()
        text = re.sub(r"scrape_interval: \d+s", f"scrape_interval: {scrape}", text)
        text = re.sub(r"scrape_timeout: \d+s", f"scrape_timeout: {scrape}", text)
        (copy / "prometheus.yml").write_text(text)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        config_dir = copy
    stack = Stack(
        project="kit-obs-bench",
        files=("compose.yaml", "bench/compose.bench.yaml"),
        env={
            "COMPOSE_PROFILES": "observability",
            "OBSERVABILITY_DIR": str(config_dir),
            "APP_TAG": os.environ.get("BENCH_APP_TAG", "bench"),
            "HTTP_PORT": "58280",
            "HTTPS_PORT": "58643",
            "BENCH_HTTPS_PORT": "58643",
            "PROMETHEUS_PORT": str(PROMETHEUS_PORT),
            "ALERTMANAGER_PORT": "59193",
            **NO_RATE_LIMIT,
        },
    )
    stack.down()
    try:
        log("building and starting the stack with the profile")
        stack.compose("up", "-d", "--build", "--wait", "--wait-timeout", "300", timeout=900)
        api = container_url(stack.container_ids("api")[0])
        item = httpx.post(
            f"{api}/items",
            json={"name": "bench", "price_cents": 1},
            headers=auth_headers(Settings(), "bench"),
        ).headers["location"]
        url = f"{api}{item}"
        wrk(url, seconds=3)  # warm-up
        without, with_ = [], []
        for round_ in range(ROUNDS):
            stack.compose("stop", "prometheus")
            without.append(wrk(url, seconds=SECONDS).rps)
            stack.compose("start", "prometheus")
            stack.wait_healthy("prometheus", timeout=60)
            # A few scrapes of every target under way before the load starts.
            time.sleep(20)
            with_.append(wrk(url, seconds=SECONDS).rps)
            log(f"round {round_ + 1}: without {without[-1]} rps, with {with_[-1]} rps")

        # Ingestion under the same load, for the disk figure.
        wal_before, started = wal_bytes(stack), time.monotonic()
        load = wrk(url, seconds=60)
        wal_growth = (wal_bytes(stack) - wal_before) / (time.monotonic() - started)
        samples = prometheus_query("rate(prometheus_tsdb_head_samples_appended_total[1m])")
        series = prometheus_query("prometheus_tsdb_head_series")
        per_day = [samples * 86400 * b for b in BYTES_PER_SAMPLE]
        ratio = statistics.median(with_) / statistics.median(without)
        print(f"scrape interval               {scrape or '15s (shipped)'}")
        print(f"api rps without Prometheus    {statistics.median(without):.0f}  {without}")
        print(f"api rps with Prometheus       {statistics.median(with_):.0f}  {with_}")
        print(f"throughput ratio with/without {ratio:.3f}")
        print(f"load during ingestion         {load.rps:.0f} rps")
        print(f"head series                   {series:.0f}")
        print(f"samples appended per second   {samples:.1f}")
        print(
            f"disk per day (blocks, est.)   {per_day[0] / 2**20:.1f}-{per_day[1] / 2**20:.1f} MiB"
            f"  x {RETENTION_DAYS} d = {per_day[0] * RETENTION_DAYS / 2**30:.2f}-"
            f"{per_day[1] * RETENTION_DAYS / 2**30:.2f} GiB"
        )
        print(f"WAL growth (upper bound)      {wal_growth * 86400 / 2**20:.1f} MiB/day")
    finally:
        log("taking the stack down")
        stack.down()


if __name__ == "__main__":
    main()
