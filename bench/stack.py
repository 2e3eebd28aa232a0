"""The kit's stack as the benchmark runs it (its own project and ports, no rate limit, the api
also published on loopback: bench/compose.bench.yaml), what the bench asks of it, and the
guards that always take it down. Importing this module starts nothing."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from bench.config import (
    ENV,
    HTTPS_PORT,
    JOB_COST,
    JOBS,
    PROJECT,
    PROXY_HEADERS,
    PROXY_PORT,
    SEED_ITEMS,
    log,
)
from bench.containers import address_on
from bench.figures import Wrk
from bench.wrk import wrk
from tests.support.stack import PID1_CHILDREN, Stack, container_url, run, wait_until


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


# Python for `python -c` in the api container: the gunicorn workers' average RSS and PSS, MiB.
_WORKER_MEMORY = PID1_CHILDREN + (
    "import re\n"
    "rows=[]\n"
    "for p in pid1_children():\n"
    "    t=open(f'/proc/{p}/smaps_rollup').read()\n"
    "    rows.append([int(re.search(k+r':\\s+(\\d+)',t).group(1)) for k in ('Rss','Pss')])\n"
    "n=len(rows)\n"
    "print(n, sum(r[0] for r in rows)/n/1024, sum(r[1] for r in rows)/n/1024)\n"
)


@dataclass
class BenchStack(Stack):
    """The kit's stack as the benchmark runs it: its own project and ports, no rate limit, the
    api also published on loopback (bench/compose.bench.yaml)."""

    project: str = PROJECT
    files: tuple[str, ...] = ("compose.yaml", "bench/compose.bench.yaml")
    env: dict[str, str] = field(default_factory=lambda: dict(ENV))
    # Traefik's HTTPS URL by proxy container: a recreated proxy may get another address.
    proxy_urls: dict[str, str] = field(default_factory=dict)

    def db_sessions(self) -> int:
        """Connections PostgreSQL has accepted so far: the difference over a run is the
        connections the api had to open (and authenticate) during it."""
        return int(
            self.psql("SELECT sessions FROM pg_stat_database WHERE datname = current_database()")
        )

    def measured(self, url: str) -> Measured:
        """wrk against the kit, with the database connections the api opened meanwhile."""
        before = self.db_sessions()
        figures = wrk(url)
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

    def proxy_url(self) -> str:
        """Traefik's HTTPS entrypoint at its address on the edge network, as the api rows reach
        the api: a published loopback port goes through docker-proxy, a userland copy that
        external traffic never takes (it is DNATed to the container) and that cost about 60 us
        per request here. The published port only where the edge network is out of reach
        (Docker Desktop)."""
        proxy = self.container_ids("proxy")[0]
        if proxy not in self.proxy_urls:
            self.proxy_urls[proxy] = self._reachable_proxy(proxy)
        return self.proxy_urls[proxy]

    def _reachable_proxy(self, container: str) -> str:
        address = address_on(container, f"{self.project}_edge")
        published = f"https://127.0.0.1:{HTTPS_PORT}"
        if address is None:
            log(f"the proxy has no address on {self.project}_edge: proxy rows use {published}")
            return published
        edge = f"https://{address}:{PROXY_PORT}"
        try:
            httpx.get(f"{edge}/health", headers=PROXY_HEADERS, timeout=2, verify=False)
        except httpx.HTTPError:
            log(f"{edge} is out of reach: proxy rows go through docker-proxy, and cost it too")
            return published
        return edge

    def start_jaeger(self) -> None:
        """The profile's Jaeger alone, receiving spans at http://jaeger:4318 as in production."""
        self.compose("up", "-d", "--wait", "--no-deps", "jaeger", JAEGER_PORT="56787")

    def recreate(self, service: str, **env: str) -> None:
        self.compose(
            "up",
            "-d",
            "--wait",
            "--no-deps",
            "--force-recreate",
            service,
            check=True,
            timeout=600,
            **env,
        )

    def web_concurrency(self) -> int:
        api = self.container_ids("api")[0]
        code = "from core.settings import get_settings; print(get_settings().gunicorn_workers)"
        return int(run(["docker", "exec", api, "python", "-c", code]).stdout)

    def worker_memory(self) -> Memory:
        """Average RSS and PSS of the gunicorn workers (PID 1's children), MiB."""
        api = self.container_ids("api")[0]
        n, rss, pss = run(["docker", "exec", api, "python", "-c", _WORKER_MEMORY]).stdout.split()
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


def raise_on_sigterm() -> None:
    """SIGTERM (a CI job cancelled, `kill`) unwinds like Ctrl-C, so the cleanups run."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)
