"""Backups against real containers: continuous archiving, point-in-time restore with `make
restore`, a database killed mid-write, and the off-host copy on a second machine (an sshd
container) surviving the loss of the server's disk. No mocks: pgBackRest, PostgreSQL, rsync and
ssh do the work; the checks read the rows back.

Its own project (kit-bk), images (APP_IMAGE=kit-bk), ports and networks: it runs beside the main
test stack (kit-test) and the others. Times are never asserted, only what is in the database."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.stack import Stack, run, wait_until

PROJECT = "kit-bk"
DB_PORT = 55632
FILES = ("compose.yaml", "tests/compose.test.yaml", "tests/compose.backup.yaml")
SEGMENT_BYTES = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory) -> Path:
    """The passphrase and the off-host key, readable by the containers' postgres user."""
    directory = tmp_path_factory.mktemp("kit-bk-secrets")
    directory.chmod(0o755)
    (directory / "cipher_pass").write_text("kit-bk-test-passphrase-0123456789")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / "offhost_key")])
    for path in directory.iterdir():
        path.chmod(0o644)
    return directory


@pytest.fixture(scope="module")
def bk(secrets_dir: Path) -> Iterator[Stack]:
    stack = Stack(
        project=PROJECT,
        files=FILES,
        with_proxy=False,
        env={
            "APP_IMAGE": "kit-bk",
            "KIT_TEST_DB_PORT": str(DB_PORT),
            "KIT_TEST_REDIS_PORT": "56579",
            "KIT_BK_SECRETS": str(secrets_dir),
            "KIT_BK_OFFHOST_PUBKEY": (secrets_dir / "offhost_key.pub").read_text().strip(),
            "BACKUP_POLL_INTERVAL": "3s",
            "BACKUP_OFFHOST_KNOWN_HOSTS": str(secrets_dir / "known_hosts"),
        },
    )
    stack.down()
    try:
        # The second machine first: its host key is pinned before anything connects to it.
        stack.compose("up", "-d", "--build", "offhost", timeout=900)
        host_key = wait_until(
            lambda: stack.compose(
                "exec", "-T", "offhost", "cat", "/etc/ssh/ssh_host_ed25519_key.pub", check=False
            ).stdout.split()[:2],
            within=30,
        )
        (secrets_dir / "known_hosts").write_text(f"offhost {' '.join(host_key)}\n")
        (secrets_dir / "known_hosts").chmod(0o644)
        stack.up("backup")
        wait_until(lambda: backups(stack), within=120, every=2)
        yield stack
    finally:
        if not os.environ.get("KIT_TEST_KEEP"):
            stack.down()


def ids(stack: Stack, table: str) -> list[int]:
    query = f"SELECT id FROM {table} ORDER BY id"  # noqa: S608 - the tests' own table names
    return [int(i) for i in stack.psql(query).split()]


def pgbackrest_info(stack: Stack) -> dict:
    out = stack.compose(
        "run", "--rm", "--no-deps", "-T", "--user", "postgres", "--entrypoint", "kit-pgbackrest",
        "db", "info", "--output=json",
    )  # fmt: skip
    return json.loads(out.stdout)[0]


def backups(stack: Stack) -> list[dict]:
    out = stack.compose(
        "exec", "-T", "--user", "postgres", "db", "pgbackrest", "info", "--output=json", check=False
    )
    return json.loads(out.stdout)[0].get("backup", []) if out.returncode == 0 else []


def test_restore_to_a_time_then_back_to_the_latest(bk):
    bk.psql("CREATE TABLE drill (id int PRIMARY KEY)")
    bk.psql("INSERT INTO drill SELECT generate_series(1, 50)")
    time.sleep(1.1)
    moment = bk.psql(
        "SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '+00'"
    )
    time.sleep(1.1)
    bk.psql("INSERT INTO drill SELECT generate_series(51, 100)")
    bk.psql("DELETE FROM drill WHERE id <= 10")
    assert ids(bk, "drill") == list(range(11, 101))

    restored = bk.make("restore", f"TIME={moment.replace('T', ' ')}", "YES=1")
    assert "restored to the moment" in restored.stdout, restored.stdout
    assert ids(bk, "drill") == list(range(1, 51)), "exactly the rows at T"
    # The plan named the way back: the timeline the database was on before.
    assert "make restore TIMELINE=1" in restored.stdout
    api = f"http://127.0.0.1:{bk.published_port('api', 8000)}"
    assert httpx.get(f"{api}/ready", timeout=5).json()["checks"]["archive"] == "ok"

    bk.make("restore", "TIMELINE=1", "YES=1")
    assert ids(bk, "drill") == list(range(11, 101)), "every row as it was before the first restore"


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) + int(low, 16)


def _segment_end(name: str) -> int:
    """The LSN where WAL segment NAME (timeline, log, segment: 8 hex digits each) ends."""
    return (int(name[8:16], 16) << 32) + (int(name[16:24], 16) + 1) * SEGMENT_BYTES


async def _write_until_killed(committed: list[tuple[int, int]], kill_after: float, db: str) -> None:
    connection = await asyncpg.connect(
        host="127.0.0.1", port=DB_PORT, user="app", password="app", database="app"
    )
    killer = threading.Timer(kill_after, lambda: run(["docker", "kill", db]))
    killer.start()
    try:
        for i in range(1, 1_000_000):
            await connection.execute("INSERT INTO crash VALUES ($1, repeat('x', 2000))", i)
            # At or after the commit record's end: a row whose value is at or below an archived
            # segment's end is in the archive.
            committed.append(
                (i, _lsn(await connection.fetchval("SELECT pg_current_wal_lsn()::text")))
            )
            if i % 300 == 0:
                await connection.execute("SELECT pg_switch_wal()")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
        pass
    finally:
        killer.join()
        connection.terminate()


RESTORE_INTO_SCRATCH = """
set -euo pipefail
kit-backup-config
mkdir -m 0700 /tmp/restored
pgbackrest restore --pg1-path=/tmp/restored --archive-mode=off >/dev/null
pg_ctl -D /tmp/restored -l /tmp/restored.log -w start >/dev/null \
  -o "-c listen_addresses='' -c unix_socket_directories=/tmp -c archive_mode=off"
in_recovery() {
  psql -XAtq -h /tmp -U "$POSTGRES_USER" -d postgres -c 'SELECT pg_is_in_recovery()'
}
until [ "$(in_recovery)" = f ]; do sleep 0.5; done
echo ROWS
psql -XAtq -h /tmp -U "$POSTGRES_USER" -d app -c 'SELECT id FROM crash ORDER BY id'
"""


def test_a_database_killed_mid_write_loses_nothing_that_was_archived(bk):
    bk.psql("CREATE TABLE crash (id int PRIMARY KEY, pad text)")
    db = bk.container_ids("db")[0]
    committed: list[tuple[int, int]] = []
    asyncio.run(_write_until_killed(committed, kill_after=6, db=db))
    assert bk.inspect(db)["State"]["Status"] == "exited"

    # The archive as the dead server left it: its last segment, then the archive alone restored
    # into a scratch directory of a one-off container, replayed to its end.
    last = pgbackrest_info(bk)["archive"][0]["max"]
    archived = [i for i, lsn in committed if lsn <= _segment_end(last)]
    assert len(archived) >= 300, (
        f"too little archived to prove anything: {len(archived)} of {len(committed)}"
    )
    out = bk.compose(
        "run", "--rm", "--no-deps", "-T", "--user", "postgres", "--entrypoint", "bash", "db", "-c",
        RESTORE_INTO_SCRATCH,
    ).stdout  # fmt: skip
    restored = {int(i) for i in out.split("ROWS", 1)[1].split()}
    assert set(archived) <= restored, f"lost: {sorted(set(archived) - restored)[:10]}"
    print(
        f"[backups] killed after {len(committed)} commits; {len(archived)} up to archived "
        f"segment {last}; {len(restored)} restored from the archive alone"
    )

    # And the server itself, restarted, recovers every acknowledged commit from its own WAL.
    bk.compose("up", "-d", "--wait", "db", "backup")
    assert set(ids(bk, "crash")) >= {i for i, _ in committed}


def _offhost_status(stack: Stack) -> tuple[float, str]:
    out = stack.compose(
        "exec",
        "-T",
        "backup",
        "cat",
        "/tmp/kit-backup/offhost",  # noqa: S108 - in the backup container
        check=False,
    ).stdout.split(maxsplit=2)
    return (float(out[0]), out[1]) if len(out) >= 2 else (0.0, "none")


def test_the_offhost_copy_survives_losing_the_servers_disk(bk):
    bk.psql("CREATE TABLE offsite (id int PRIMARY KEY)")
    bk.psql("INSERT INTO offsite SELECT generate_series(1, 20)")
    bk.compose("exec", "-T", "--user", "postgres", "db", "pgbackrest", "check")
    archived_at = time.time()
    wait_until(lambda: _offhost_status(bk) > (archived_at + 1, ""), within=60, every=1)
    assert _offhost_status(bk)[1] == "ok", bk.logs("backup")
    # Encrypted there as here: the other machine holds ciphertext and no key.
    remote_info = bk.compose(
        "exec",
        "-T",
        "offhost",
        "head",
        "-c",
        "8",
        "/home/backup-copy/pgbackrest/repo/backup/main/backup.info",
    ).stdout
    assert remote_info == "Salted__"

    # The disk is gone: the database and the repository with it.
    bk.compose("stop", "api", "worker", "backup", "db")
    bk.compose("rm", "-f", "db", "backup")
    run(["docker", "volume", "rm", f"{PROJECT}_pgdata", f"{PROJECT}_pgbackrest"])
    # A new, empty database, and a backup service that must not overwrite the copy with it.
    bk.compose("up", "-d", "--wait", "db")
    bk.compose("up", "-d", "backup")
    wait_until(lambda: "not overwritten" in bk.logs("backup", tail=200), within=90, every=2)

    bk.make("backup-fetch")
    restored = bk.make("restore", "YES=1")
    assert "restored to the latest archived commit" in restored.stdout
    assert ids(bk, "offsite") == list(range(1, 21))
    pushed_at = time.time()
    wait_until(lambda: _offhost_status(bk) > (pushed_at + 1, ""), within=60, every=1)
    assert _offhost_status(bk)[1] == "ok", "the restored cluster is the copy's own: copied again"


def test_production_refuses_an_unencrypted_offhost_copy(bk):
    proc = bk.compose(
        "run", "--rm", "--no-deps", "-T", "-e", "ENVIRONMENT=production",
        "-e", "BACKUP_CIPHER_PASS_FILE=", "backup", check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "BACKUP_CIPHER_PASS_FILE" in proc.stderr + proc.stdout


def test_backup_files_are_the_owners_alone(bk):
    modes = bk.compose(
        "exec", "-T", "--user", "postgres", "db", "sh", "-c",
        "find /var/lib/pgbackrest/archive /var/lib/pgbackrest/backup -type f -printf '%m\\n'"
        " | sort -u",
    ).stdout.split()  # fmt: skip
    assert modes == ["600"]


def test_make_backup_takes_one_now(bk):
    before = len(backups(bk))
    bk.make("backup", "TYPE=incr")
    assert len(backups(bk)) == before + 1
