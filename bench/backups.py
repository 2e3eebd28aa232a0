"""make bench-backups: what continuous archiving and pgBackRest cost and give, measured on a real
stack (its own project, kit-bk-bench): archive lag under steady writes, full backup and restore
time for a database of BENCH_DB_GB (default 1) generated with generate_series, and the disk the
repository uses against the database. Prints the figures; asserts nothing.

Run from the repository root as `python -m bench.backups`. Takes about 5 minutes for 1 GB on 2
cores. Never while other tests or benchmarks run on the machine: the figures would be theirs too.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time

import asyncpg

from tests.support.stack import Stack, wait_until

DB_PORT = 55732
# The development stack's owner role (compose.yaml's defaults), on a loopback port.
DSN = f"postgresql://app:app@127.0.0.1:{DB_PORT}/app"
SEGMENT_BYTES = 16 * 1024 * 1024
FILES = ("compose.yaml", "tests/compose.test.yaml")


def lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def segment_end(name: str) -> int:
    return (int(name[8:16], 16) << 32) + (int(name[16:24], 16) + 1) * SEGMENT_BYTES


def repo_bytes(stack: Stack) -> int:
    out = stack.compose(
        "exec", "-T", "--user", "postgres", "db", "du", "-sb", "/var/lib/pgbackrest"
    )
    return int(out.stdout.split()[0])


async def archive_lag(seconds: float, rate: float) -> list[float]:
    """Commits at `rate` per second for `seconds`; for each, the time until the archiver reported
    the segment holding it archived (pg_stat_archiver, polled every 0.2 s)."""
    conn = await asyncpg.connect(DSN)
    watcher = await asyncpg.connect(DSN)
    await conn.execute("CREATE TABLE IF NOT EXISTS lag (id bigserial PRIMARY KEY, pad text)")
    pending: list[tuple[float, int]] = []
    lags: list[float] = []
    start = time.monotonic()

    async def watch() -> None:
        while time.monotonic() < start + seconds + 120 and (
            pending or time.monotonic() < start + seconds
        ):
            wal = await watcher.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
            now = time.monotonic()
            if wal and len(wal) == 24:
                end = segment_end(wal)
                while pending and pending[0][1] <= end:
                    lags.append(now - pending.pop(0)[0])
            await asyncio.sleep(0.2)

    watching = asyncio.create_task(watch())
    n = 0
    while time.monotonic() < start + seconds:
        await conn.execute("INSERT INTO lag (pad) VALUES (repeat(md5(random()::text), 32))")
        pending.append(
            (time.monotonic(), lsn(await conn.fetchval("SELECT pg_current_wal_lsn()::text")))
        )
        n += 1
        await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))
    await watching
    await conn.close()
    await watcher.close()
    return lags


def main() -> None:
    gigabytes = float(os.environ.get("BENCH_DB_GB", "1"))
    lag_seconds = float(os.environ.get("BENCH_LAG_SECONDS", "130"))
    stack = Stack(
        project="kit-bk-bench",
        files=FILES,
        with_proxy=False,
        env={
            "APP_IMAGE": "kit-bk",
            "KIT_TEST_DB_PORT": str(DB_PORT),
            "KIT_TEST_REDIS_PORT": "56679",
        },
    )
    stack.down()
    try:
        stack.up("backup")
        wait_until(
            lambda: json.loads(
                stack.compose(
                    "exec", "-T", "--user", "postgres", "db", "pgbackrest", "info", "--output=json"
                ).stdout
            )[0].get("backup"),
            within=120,
        )
        timeout = stack.psql("SHOW archive_timeout", timeout=3600)
        # A trickle (segments close by archive_timeout) and a steady stream (segments fill).
        for rate, seconds in ((20.0, lag_seconds), (1000.0, lag_seconds / 2)):
            lags = asyncio.run(archive_lag(seconds, rate))
            print(
                f"[backups] archive lag, {len(lags) / seconds:.0f} commits/s of ~1 kB for "
                f"{seconds:.0f} s (archive_timeout {timeout}): median "
                f"{statistics.median(lags):.1f} s, "
                f"p99 {statistics.quantiles(lags, n=100)[98]:.1f} s, max {max(lags):.1f} s"
            )

        started = time.monotonic()
        target = int(gigabytes * 1024**3)
        stack.psql("CREATE TABLE big (id bigint, pad text)", timeout=3600)
        while int(stack.psql("SELECT pg_database_size('app')", timeout=3600)) < target:
            stack.psql(
                "INSERT INTO big SELECT g, md5(g::text) || repeat(md5(random()::text), 3) "
                "FROM generate_series(1, 2000000) g",
                timeout=3600,
            )
        db_bytes = int(stack.psql("SELECT pg_database_size('app')", timeout=3600))
        print(
            f"[backups] generated {db_bytes / 1024**3:.2f} GB in {time.monotonic() - started:.0f} s"
        )

        started = time.monotonic()
        stack.compose(
            "exec",
            "-T",
            "--user",
            "postgres",
            "db",
            "pgbackrest",
            "backup",
            "--type=full",
            timeout=3600,
        )
        print(
            f"[backups] full backup of {db_bytes / 1024**3:.2f} GB: "
            f"{time.monotonic() - started:.0f} s"
        )
        started = time.monotonic()
        stack.psql("UPDATE big SET pad = pad || 'x' WHERE id % 100 = 0", timeout=3600)
        stack.compose(
            "exec",
            "-T",
            "--user",
            "postgres",
            "db",
            "pgbackrest",
            "backup",
            "--type=diff",
            timeout=3600,
        )
        print(
            "[backups] differential backup after 1% of rows changed: "
            f"{time.monotonic() - started:.0f} s"
        )
        info = json.loads(
            stack.compose(
                "exec", "-T", "--user", "postgres", "db", "pgbackrest", "info", "--output=json"
            ).stdout
        )[0]
        data_bytes = int(
            stack.compose(
                "exec", "-T", "--user", "postgres", "db", "du", "-sb", "/var/lib/postgresql/data"
            ).stdout.split()[0]
        )
        repo = repo_bytes(stack)
        full = [b for b in info["backup"] if b["type"] == "full"][-1]
        print(
            f"[backups] data directory {data_bytes / 1024**3:.2f} GB; "
            f"repository {repo / 1024**3:.2f} GB "
            f"({repo / data_bytes:.0%} of it: {len(info['backup'])} backups + archived WAL); "
            f"newest full backup {full['info']['repository']['delta'] / 1024**3:.2f} GB compressed"
        )

        started = time.monotonic()
        out = stack.make("restore", "YES=1", timeout=3600)
        print(
            f"[backups] make restore (latest, --delta over the live data directory): "
            f"{time.monotonic() - started:.0f} s in all; {out.stdout.strip().splitlines()[-1]}"
        )
        stack.compose("stop", "db")
        stack.compose(
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "--user",
            "postgres",
            "--entrypoint",
            "bash",
            "db",
            "-c",
            "rm -rf /var/lib/postgresql/data/*",
        )
        started = time.monotonic()
        stack.compose(
            "run",
            "--rm",
            "--no-deps",
            "-T",
            "--user",
            "postgres",
            "--entrypoint",
            "kit-db-restore",
            "db",
            "latest",
            timeout=3600,
        )
        print(
            f"[backups] pgBackRest restore into an empty data directory (a lost disk): "
            f"{time.monotonic() - started:.0f} s"
        )
    finally:
        stack.down()


if __name__ == "__main__":
    main()
