"""make deploy against a real SSH server: an sshd on a loopback port, with this machine's Docker
Engine behind it and its own deploy path. Its host key pinned (make deploy-trust), the secrets as
files. Release 1, release 2 under load (zero failed requests), a broken release 3 (deployed
uncommitted) that must leave release 2 serving, a rollback to release 1, the lock, the log, the
backups and who may read them, a release the public check refuses while a second deploy waits
for the lock; then a release whose migration waits behind a held lock on items: refused, with
nothing failed; then make scale, run on the server, in production mode."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from api.readiness import head_revision
from tests.support import stack as stack_module
from tests.support.deploy import SECRETS, SSH_PORT, Workspace, commit_release, deploy_checkout
from tests.support.jobs import poll_job
from tests.support.load import cycle, get, post, slow_post, steady_load
from tests.support.migrations import migration_source
from tests.support.schedules import assert_both_schedules_once, settle
from tests.support.stack import make, psql, run, wait_until


@pytest.fixture(scope="module", autouse=True)
def _parts() -> None:
    """A production deploy needs an SSH server and the proxy."""
    stack_module.require(Path("/usr/sbin/sshd").exists(), "sshd (openssh-server)")
    stack_module.require(
        stack_module.image_exists(stack_module.TRAEFIK_IMAGE), stack_module.TRAEFIK_IMAGE
    )


# Overridable, so a second copy of this test can run beside another on one engine.
HTTPS_PORT = int(os.environ.get("KIT_DEPLOY_TEST_HTTPS_PORT", "38443"))
PROJECT = os.environ.get("KIT_DEPLOY_TEST_PROJECT", "kit-deploy")
CLIENT_BASE = f"https://127.0.0.1:{HTTPS_PORT}"
API_HOST = {"Host": "api.localhost"}
# A job that runs through the rollout (a few seconds of the worker's CPU): finished once.
JOB_COST = 3_000_000
DRAIN_FILE = "/tmp/kit-deploy-test.drain"  # noqa: S108 - in the api container's tmpfs
READY_PATCH = (
    "return JSONResponse(body, status_code=503 if failed else 200)",
    "return JSONResponse(body, status_code=503)",
)


@pytest.fixture(scope="module")
def workspace(server, tmp_path_factory):
    """A clone of this repository to deploy from, its production env and secrets, and the
    server's path; the server's host key pinned and committed, as docs/deploy.md has it done."""
    root = tmp_path_factory.mktemp("deploy")
    source, secrets = deploy_checkout(root, "deploy test")
    env_file = root / "production.env"
    env_file.write_text(
        "ACME_EMAIL=ops@example.com\nAPI_DOMAIN=api.localhost\n"
        # Nothing leaves this machine: the ACME directory is a closed loopback port.
        "ACME_CA_SERVER=https://127.0.0.1:9/directory\n"
        f"HTTP_PORT={HTTPS_PORT - 360}\nHTTPS_PORT={HTTPS_PORT}\n"
        # The test's clients name no host in TLS (https://127.0.0.1 with a Host header) and no
        # certificate exists for api.localhost here: strict SNI, on in production, would refuse
        # them. tests/e2e/full/test_security.py proves it with a certificate.
        "PROXY_SNI_STRICT=false\n"
        f"NOFILE_LIMIT={stack_module.compose_env()['NOFILE_LIMIT']}\n"
        # Not the default: the deploy must drain through the api's own setting.
        f"DRAIN_FILE={DRAIN_FILE}\n"
        # The test's own load comes from one address: Traefik's per-client limit must not count.
        "RATE_LIMIT_AVERAGE=5000\nRATE_LIMIT_BURST=10000\n"
        # Ticks every 5 s, counted across release 2's rollout (tests/support/schedules.py).
        "PURGE_INTERVAL_SECONDS=5\nJOB_SNAPSHOT_INTERVAL_SECONDS=5\n"
    )
    env = {
        **stack_module.compose_env(),
        "DEPLOY_HOST": "root@127.0.0.1",
        "DEPLOY_PORT": str(SSH_PORT),
        "DEPLOY_PATH": str(root / "srv"),
        "DEPLOY_ENV_FILE": str(env_file),
        "DEPLOY_SECRETS_DIR": str(secrets),
        "DEPLOY_PROJECT": PROJECT,
        "DEPLOY_SSH_OPTS": f"-i {server / 'client_key'} -o LogLevel=ERROR",
        "DEPLOY_HEALTH_URL": f"https://api.localhost:{HTTPS_PORT}/ready",
        "DEPLOY_HEALTH_CURL_OPTS": f"-k --resolve api.localhost:{HTTPS_PORT}:127.0.0.1",
        "DEPLOY_HEALTH_TIMEOUT": "90",
        "DEPLOY_MIN_FREE_MB": "100",
        "DEPLOY_WHO": "deploy-test",
        "APP_IMAGE": f"{PROJECT}-test",
    }
    # The host key: unknown, the deploy refuses to connect; pinned, the one the server has.
    unpinned = make("deploy-log", cwd=source, env=env, check=False)
    assert unpinned.returncode != 0
    assert "host key is not pinned: run make deploy-trust" in unpinned.stderr
    trusted = make("deploy-trust", "YES=1", cwd=source, env=env)
    host_key = run(["ssh-keygen", "-lf", str(server / "host_key.pub")]).stdout.split()[1]
    assert host_key in trusted.stdout
    run(["git", "add", "deploy/known_hosts"], cwd=source)
    run(["git", "commit", "-qm", "pin the test server's host key"], cwd=source)
    yield Workspace(source, root / "srv", env)
    srv = root / "srv"
    compose = (
        current_compose(srv) if (srv / "current").exists() else ["docker", "compose", "-p", PROJECT]
    )
    run([*compose, "down", "-v", "--remove-orphans", "--timeout", "5"], check=False, env=env)
    images = run(["docker", "images", "-q", "--filter", f"reference={PROJECT}-test-*"], check=False)
    if images.stdout.split():
        run(["docker", "rmi", "-f", *set(images.stdout.split())], check=False)


RELEASE_2_MIGRATION = migration_source(
    "deploy test: an index",
    "deploytest2",
    str(head_revision()),
    'op.create_index("ix_items_name_deploy_test", "items", ["name"])',
    'op.drop_index("ix_items_name_deploy_test", table_name="items")',
)


def current_revision(srv: Path, env) -> str:
    return psql(current_compose(srv), "SELECT version_num FROM alembic_version", env=env)


# A deploy's restore point, restored from the server's pgBackRest archive into a scratch data
# directory of a one-off db container (its tmpfs), and the migration revision found there. The
# running database is not touched.
RESTORE_POINT_REVISION = """
set -eu
kit-backup-config
mkdir -m 0700 /tmp/point
pgbackrest restore --pg1-path=/tmp/point --type=name --target="$1" --target-action=promote \\
  --archive-mode=off >/dev/null
pg_ctl -D /tmp/point -l /tmp/point.log -w start >/dev/null \\
  -o "-c listen_addresses='' -c unix_socket_directories=/tmp -c archive_mode=off"
sql() { psql -XAtq -h /tmp -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "$1"; }
until [ "$(sql 'SELECT pg_is_in_recovery()')" = f ]; do sleep 0.5; done
sql 'SELECT version_num FROM alembic_version'
"""


def revision_at_restore_point(srv: Path, env, name: str) -> str:
    one_off = ["run", "--rm", "--no-deps", "-T", "--user", "postgres", "--entrypoint", "sh", "db"]
    command = [*current_compose(srv), *one_off, "-c", RESTORE_POINT_REVISION, "sh", name]
    return run(command, env=env).stdout.strip()


def https_client() -> httpx.Client:
    return httpx.Client(
        base_url=CLIENT_BASE,
        headers=API_HOST,
        verify=False,
        timeout=5,
    )


def serving_release(client: httpx.Client):
    return client.get("/health").json().get("release")


def current_compose(srv: Path) -> list[str]:
    """`docker compose` for the release the server's `current` link points at."""
    current = srv / "current"
    return [
        "docker",
        "compose",
        "-p",
        PROJECT,
        "--project-directory",
        str(current),
        "-f",
        str(current / "compose.yaml"),
        "-f",
        str(current / "compose.prod.yaml"),
    ]


def proxy_log(srv: Path, env) -> str:
    """What explains a failed request: the proxy's and the socket proxy's own lines, and the
    access lines of requests that did not get a 2xx (the first and last few)."""
    proc = run(
        [*current_compose(srv), "logs", "--no-color", "--timestamps", "proxy", "socket-proxy"],
        env=env,
        check=False,
    )
    lines = [
        line
        for line in proc.stdout.splitlines()
        if '"DownstreamStatus"' not in line or '"DownstreamStatus":2' not in line
    ]
    failed = [line for line in lines if '"DownstreamStatus"' in line]
    own = [line for line in lines if '"DownstreamStatus"' not in line]
    return "\n".join([*own[-40:], *failed[:5], "...", *failed[-5:]])[-12000:]


def proxy_files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir() if p.is_file()}


def releases(srv: Path) -> list[str]:
    return sorted(p.name for p in (srv / "releases").iterdir())


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def on_server(server: Path, source: Path, command: str) -> subprocess.CompletedProcess[str]:
    """COMMAND in a login on the test server, as an operator types it there: sshd's environment,
    none of this test's."""
    ssh = ["ssh", "-p", str(SSH_PORT), "-i", str(server / "client_key"), "-o", "BatchMode=yes"]
    ssh += ["-o", "StrictHostKeyChecking=yes", "-o", "LogLevel=ERROR"]
    ssh += ["-o", f"UserKnownHostsFile={source / 'deploy' / 'known_hosts'}", "root@127.0.0.1"]
    return run([*ssh, command], timeout=600)


def api_containers() -> list[dict]:
    """docker inspect of the deployed project's running api containers."""
    project, service = (
        f"label=com.docker.compose.project={PROJECT}",
        "label=com.docker.compose.service=api",
    )
    ids = run(["docker", "ps", "-q", "--filter", project, "--filter", service]).stdout.split()
    return json.loads(run(["docker", "inspect", *ids]).stdout) if ids else []


class SteadyLoad:
    """GET /health through Traefik as fast as one connection allows, counting every outcome."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.releases_seen: list[object] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + 600  # bounded, whatever happens
        with https_client() as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                try:
                    r = client.get("/health")
                    self.outcomes[str(r.status_code)] += 1
                    release = r.json().get("release") if r.status_code == 200 else None
                    if not self.releases_seen or self.releases_seen[-1] != release:
                        self.releases_seen.append(release)
                except httpx.HTTPError as exc:
                    self.outcomes[type(exc).__name__] += 1
                time.sleep(0.01)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


def test_deploy_release_rollback_lock_log_backup(workspace):
    source, srv, env = workspace

    # Release 1, onto an empty server.
    commit_release(source, 1)
    workspace.make("deploy")
    client = https_client()
    wait_until(lambda: serving_release(client) == 1, within=30)
    release_1 = releases(srv)[-1]
    assert (srv / "current").resolve().name == release_1
    # The release's .env names the production overlay, the project and the secrets directory,
    # and holds no secret; only the deploying user reaches any of it.
    dotenv = (srv / "current" / ".env").read_text()
    for line in (
        f"SECRETS_DIR={srv / 'secrets'}",
        "COMPOSE_FILE=compose.yaml:compose.prod.yaml",
        f"COMPOSE_PROJECT_NAME={PROJECT}",
    ):
        assert f"\n{line}\n" in dotenv
    assert not [name for name, value in SECRETS.items() if value in dotenv]
    assert {p.name: p.read_text() for p in (srv / "secrets").iterdir()} == SECRETS
    assert {mode(p) for p in (srv / "secrets").iterdir()} == {0o444}
    for private in (srv, srv / "releases", srv / "backups", srv / "secrets"):
        assert mode(private) == 0o700, private
    assert mode(srv / "current" / ".env") == 0o600
    token = run(
        [*current_compose(srv), "exec", "-T", "api", "python", "-m", "api.token", "deploy-test"],
        env=env,
    ).stdout.strip()
    item = client.post(
        "/items",
        json={"name": "kept across releases"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert item.status_code == 201

    # Release 2, under steady load: not one request may fail. It also changes the proxy's
    # dynamic configuration, which Traefik reloads while serving.
    middlewares = source / "proxy" / "dynamic" / "middlewares.yml"
    middlewares.write_text(middlewares.read_text() + "# changed by release 2\n")
    # And it adds a migration: its before-migration dump must hold the schema before it.
    migration = source / "api" / "migrations" / "versions" / "20261201_9000_deploy_test.py"
    migration.write_text(RELEASE_2_MIGRATION)
    run(["git", "add", str(migration)], cwd=source)
    commit_release(source, 2)
    # Besides the release watcher: users' traffic on several connections, reads and writes, some
    # slow uploads in flight while containers stop, and a job running on the worker.
    writer = {"Authorization": f"Bearer {token}"}
    traffic = cycle(
        get(f"/items/{item.json()['id']}"),
        get("/items?limit=10"),
        post("/items", {"name": "written during a deploy"}, **writer),
        slow_post("/items", {"name": "uploaded slowly during a deploy"}, 1.5, **writer),
    )
    job = client.post("/jobs", json={"cost": JOB_COST, "seed": "deploy"}, headers=writer)
    assert job.status_code == 202
    with (
        SteadyLoad() as load,
        steady_load(CLIENT_BASE, traffic, headers=API_HOST, connections=8, rate=60) as users,
    ):
        time.sleep(2)
        ticks_from = time.time()
        deployed = workspace.make("deploy")
        wait_until(lambda: load.releases_seen[-1] == 2, within=30)
        time.sleep(2)
        ticks_until = time.time()
    assert set(load.outcomes) == {"200"}, (
        f"failed requests during the deploy: {load.outcomes}\n{proxy_log(srv, env)}"
    )
    assert load.outcomes["200"] > 100
    assert users.failures() == [], f"{users.kinds()}\n{proxy_log(srv, env)}"
    assert sum(o.method == "POST" and o.ok for o in users.outcomes) > 20
    done = poll_job(lambda: client.get(job.headers["location"]).json(), within=120, every=0.5)
    assert (done["state"], done["attempts"]) == ("succeeded", 1), done
    # Old and new serve side by side while the new ones prove healthy; then only the new.
    assert load.releases_seen[0] == 1
    assert load.releases_seen[-1] == 2
    assert {serving_release(client) for _ in range(30)} == {2}
    release_2 = releases(srv)[-1]
    assert revision_at_restore_point(srv, env, f"before-{release_2}") == head_revision()
    assert current_revision(srv, env) == "deploytest2"
    # The old containers (production runs 2) drained through DRAIN_FILE of their settings, for
    # three rounds of the 2 s health-check interval on their Traefik label.
    assert f"drain on: {DRAIN_FILE}" in deployed.stderr
    assert "draining 2 old api container(s) for 6s" in deployed.stderr
    assert (srv / "proxy-dynamic" / "middlewares.yml").read_text().endswith("release 2\n")
    assert client.get(f"/items/{item.json()['id']}").status_code == 200

    # Every 5-s tick across the rollout ran once: the new scheduler started beside the old one
    # (both sending), and none fell in a gap between them.
    def db(sql: str) -> str:
        return psql(current_compose(srv), sql, env=env)

    settle(db, ticks_until)
    assert_both_schedules_once(db, ticks_from, ticks_until)

    # Release 3 fails its health check: the deploy fails, release 2 keeps serving throughout.
    # It is left uncommitted (DEPLOY_ALLOW_DIRTY=1), with an untracked file: the release ships
    # the working tree its images were built from, not HEAD's files.
    commit_release(source, "broken", commit=False)
    (source / "api" / "dirty-marker.txt").write_text("untracked\n")
    env["DEPLOY_ALLOW_DIRTY"] = "1"
    with SteadyLoad() as load:
        failed = workspace.make("deploy", check=False)
    del env["DEPLOY_ALLOW_DIRTY"]
    assert failed.returncode != 0
    assert "unhealthy" in failed.stderr or "not healthy" in failed.stderr, failed.stderr
    assert "previous release is still serving" in failed.stderr
    assert set(load.outcomes) == {"200"}, load.outcomes
    assert load.releases_seen == [2]
    assert serving_release(client) == 2
    assert (srv / "current").resolve().name == release_2
    release_3 = releases(srv)[-1]
    assert release_3.endswith("-dirty")
    assert '{"broken": 1}' in (srv / "releases" / release_3 / "api/routes/ops.py").read_text()
    assert (srv / "releases" / release_3 / "api" / "dirty-marker.txt").exists()
    (source / "api" / "dirty-marker.txt").unlink()
    run(["git", "commit", "-q", "-am", "release broken"], cwd=source)

    # Roll back to release 1 by name.
    rolled_back = workspace.make("rollback", f"RELEASE={release_1}")
    # Migrations are not undone; it names the point from before the migrations of the release
    # it left, should one have destroyed data.
    assert f"make restore POINT=before-{release_2}" in rolled_back.stderr
    wait_until(lambda: serving_release(client) == 1, within=30)
    assert (srv / "current").resolve().name == release_1
    # With its own proxy configuration: release 2's change to the middlewares is undone.
    assert proxy_files(srv / "proxy-dynamic") == proxy_files(
        srv / "releases" / release_1 / "proxy" / "dynamic"
    )
    assert not (srv / "proxy-dynamic" / "middlewares.yml").read_text().endswith("release 2\n")

    # The lock: a second deploy waits, then fails naming the holder; it can be broken on purpose.
    (srv / "deploy.lock").mkdir()
    (srv / "deploy.lock" / "owner").write_text("alice@laptop since 2026-11-22T10:00:00Z\n")
    env["DEPLOY_LOCK_TIMEOUT"] = "3"
    locked = workspace.make("deploy", check=False)
    assert locked.returncode != 0
    assert "alice@laptop" in locked.stderr
    broken = workspace.make("deploy-unlock")
    assert "lock held by alice@laptop" in broken.stderr
    assert not (srv / "deploy.lock").exists()

    # The log: every deploy, with who, release and result, in order.
    log = workspace.make("deploy-log").stdout.splitlines()
    results = [line.split("\t")[1] for line in log]
    assert results == ["success", "success", "failed", "rollback"], log
    assert all("\tdeploy-test\t" in line for line in log)

    # A restore point was made and archived before each migration after the first release.
    points = (srv / "backups" / "restore-points").read_text().splitlines()
    assert [line.split("\t")[1] for line in points] == [
        f"before-{release_2}",
        f"before-{release_3}",
    ]
    assert mode(srv / "backups" / "restore-points") == 0o600

    # A release whose containers are healthy but whose public check fails (/ready 503 through
    # the proxy): rolled back by the deploy itself, under load, with nothing failed. While it
    # runs, a second deploy is refused: it names the first, whose lock it leaves alone.
    ops = source / "api" / "routes" / "ops.py"
    ops.write_text(ops.read_text().replace(READY_PATCH[0], READY_PATCH[1]))
    commit_release(source, 5)
    with SteadyLoad() as load:
        first = subprocess.Popen(
            ["make", "--no-print-directory", "deploy"],
            cwd=source,
            env={**env, "DEPLOY_LOCK_TIMEOUT": "120"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_until(lambda: (srv / "deploy.lock" / "owner").exists(), within=300, every=0.2)
            holder = (srv / "deploy.lock" / "owner").read_text()
            second = workspace.make("deploy", check=False)
            assert second.returncode != 0
            assert "another deploy holds the lock: deploy-test" in second.stderr, second.stderr
            assert first.poll() is None, "the first deploy ended before the second tried"
            assert (srv / "deploy.lock" / "owner").read_text() == holder
        finally:
            _, refused = first.communicate(timeout=900)
        wait_until(lambda: serving_release(client) == 1, within=60)
        time.sleep(2)
    assert first.returncode != 0
    assert "public check failed after the switch; rolled back to" in refused, refused[-3000:]
    assert not (srv / "deploy.lock").exists()
    assert set(load.outcomes) == {"200"}, f"{load.outcomes}\n{proxy_log(srv, env)}"
    assert set(load.releases_seen) <= {1, 5}
    assert load.releases_seen[-1] == 1
    last = workspace.make("deploy-log").stdout.splitlines()[-1].split("\t")
    assert last[1] == "rolled-back", last


# A transaction that read items and stays open (ACCESS SHARE, as any read takes): it does not
# block the app's reads and writes, only the ALTER TABLE's ACCESS EXCLUSIVE, and everything that
# queues behind that.
HOLD_ITEMS = (
    'PGAPPNAME=deploy-test-lock psql -XAtq -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" '
    '-d "$POSTGRES_DB" -c BEGIN -c "LOCK TABLE items IN ACCESS SHARE MODE" '
    '-c "SELECT pg_sleep(600)"'
)
LOCK_HELD = (
    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
    "WHERE a.application_name = 'deploy-test-lock' AND l.relation = 'items'::regclass "
    "AND l.granted"
)
LOCK_TEST_RETRIES = 2


def test_a_migration_behind_a_held_lock_fails_the_deploy_and_the_old_release_serves(workspace):
    """A long transaction holds a lock on items; a release whose migration alters items is
    deployed under steady reads and writes: not one request fails, the deploy fails naming the
    lock timeout, the old release serves. With the transaction gone, the same deploy succeeds."""
    source, srv, env = workspace
    if not (srv / "current").exists():  # run on its own: a release first
        commit_release(source, 1)
        workspace.make("deploy")
    client = https_client()
    old_release = serving_release(client)
    old_current = (srv / "current").resolve().name
    head = current_revision(srv, env)
    migration = source / "api" / "migrations" / "versions" / "20261201_9001_deploy_lock_test.py"
    migration.write_text(
        migration_source(
            "deploy test: a column on items, behind a held lock",
            "deploylock",
            head,
            'op.add_column("items", sa.Column("deploy_lock_test", sa.Text(), nullable=True))',
            'op.drop_column("items", "deploy_lock_test")',
            imports=("import sqlalchemy as sa", "from alembic import op"),
        )
    )
    run(["git", "add", str(migration)], cwd=source)
    # A healthy /ready again, after the first test's release 5 broke it.
    ops = source / "api" / "routes" / "ops.py"
    ops.write_text(ops.read_text().replace(READY_PATCH[1], READY_PATCH[0]))
    commit_release(source, 6)
    # The default lock timeout (MIGRATION_LOCK_TIMEOUT_MS), fewer retries to keep the test short.
    env_file = Path(env["DEPLOY_ENV_FILE"])
    production_env = env_file.read_text()
    env_file.write_text(production_env + f"MIGRATION_LOCK_RETRIES={LOCK_TEST_RETRIES}\n")

    token = run(
        [*current_compose(srv), "exec", "-T", "api", "python", "-m", "api.token", "lock-test"],
        env=env,
    ).stdout.strip()
    writer = {"Authorization": f"Bearer {token}"}
    item = client.post("/items", json={"name": "read during a held lock"}, headers=writer)
    assert item.status_code == 201
    traffic = cycle(
        get(f"/items/{item.json()['id']}"),
        get("/items?limit=10"),
        post("/items", {"name": "written during a held lock"}, **writer),
    )
    holder = subprocess.Popen(
        [*current_compose(srv), "exec", "-T", "db", "sh", "-c", HOLD_ITEMS],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: psql(current_compose(srv), LOCK_HELD, env=env) == "1", within=30)
        with (
            SteadyLoad() as load,
            steady_load(
                CLIENT_BASE, traffic, headers=API_HOST, connections=8, rate=60, max_seconds=600
            ) as users,
        ):
            time.sleep(2)
            refused = workspace.make("deploy", check=False)
            time.sleep(2)
    finally:
        psql(
            current_compose(srv),
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'deploy-test-lock'",
            env=env,
        )
        holder.wait(timeout=30)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "migration failed: lock timeout on table items" in output, output[-5000:]
    assert "(deploy-test-lock, " in output, "names who holds the lock"
    for retry in range(1, LOCK_TEST_RETRIES + 1):
        assert f"lock timeout on table items: retry {retry}/{LOCK_TEST_RETRIES}" in output
    assert "previous release is still serving" in refused.stderr
    assert set(load.outcomes) == {"200"}, f"{load.outcomes}\n{proxy_log(srv, env)}"
    assert load.releases_seen == [old_release]
    assert users.failures() == [], f"{users.kinds()}\n{proxy_log(srv, env)}"
    assert sum(o.method == "POST" and o.ok for o in users.outcomes) > 20, users.summary()
    assert (srv / "current").resolve().name == old_current
    assert current_revision(srv, env) == head, "the upgrade was rolled back"
    last = workspace.make("deploy-log").stdout.splitlines()[-1].split("\t")
    assert last[1] == "failed", last

    # The transaction gone: the same commit deploys, under the same load.
    try:
        with (
            SteadyLoad() as load,
            steady_load(
                CLIENT_BASE, traffic, headers=API_HOST, connections=8, rate=60, max_seconds=600
            ) as users,
        ):
            deployed = workspace.make("deploy")
            wait_until(lambda: load.releases_seen[-1] == 6, within=30)
            time.sleep(2)
    finally:
        env_file.write_text(production_env)
    assert "lock timeout" not in deployed.stdout + deployed.stderr
    assert set(load.outcomes) == {"200"}, f"{load.outcomes}\n{proxy_log(srv, env)}"
    assert users.failures() == [], f"{users.kinds()}\n{proxy_log(srv, env)}"
    assert current_revision(srv, env) == "deploylock"
    assert serving_release(client) == 6


def test_make_scale_on_the_server_starts_production_containers(workspace, server):
    """In the server's current/, the Makefile's plain `docker compose` is the deployed project
    with the production overlay: deploy's .env says so (COMPOSE_FILE, COMPOSE_PROJECT_NAME)."""
    source, srv, _ = workspace
    if not (srv / "current").exists():  # run on its own: a release first
        commit_release(source, 1)
        workspace.make("deploy")
    release = (srv / "current").resolve().name
    replicas = len(api_containers())
    assert replicas >= 1
    current = shlex.quote(str(srv / "current"))
    on_server(server, source, f"cd {current} && make scale REPLICAS={replicas + 1}")
    try:
        scaled = api_containers()
        assert len(scaled) == replicas + 1
        for container in scaled:
            name = container["Name"]
            assert container["HostConfig"]["ReadonlyRootfs"] is True, name
            assert "ALL" in container["HostConfig"]["CapDrop"], name
            assert "ENVIRONMENT=production" in container["Config"]["Env"], name
            assert container["Config"]["Image"] == f"{PROJECT}-test-api:{release}", name
    finally:
        on_server(server, source, f"cd {current} && make scale REPLICAS={replicas}")
    assert len(api_containers()) == replicas


def test_deploy_rotate_secret_rotates_on_the_server_and_copies_the_value_back(workspace):
    """make deploy-rotate-secret under load (docs/secrets.md): no failed request, the old Redis
    password refused, and DEPLOY_SECRETS_DIR holding the server's new value, so the next deploy
    ships it. A copy here that is not the server's is refused before anything changes."""
    source, srv, env = workspace
    if not (srv / "current").exists():  # run on its own: a release first
        commit_release(source, 1)
        workspace.make("deploy")
    here = Path(env["DEPLOY_SECRETS_DIR"]) / "redis_password"
    there = srv / "secrets" / "redis_password"
    old = here.read_text()

    here.chmod(0o644)
    here.write_text("not the server's")
    refused = workspace.make("deploy-rotate-secret", "NAME=redis_password", check=False)
    here.write_text(old)
    here.chmod(0o444)
    assert refused.returncode != 0
    assert "is not the server's redis_password: make deploy first" in refused.stderr
    assert there.read_text() == old

    token = run(
        [*current_compose(srv), "exec", "-T", "api", "python", "-m", "api.token", "rotate-test"],
        env=env,
    ).stdout.strip()
    writer = {"Authorization": f"Bearer {token}"}
    traffic = cycle(
        get("/items?limit=10"),
        post("/items", {"name": "written during a rotation"}, **writer),
        post("/jobs", {"cost": 200_000, "seed": "rotate"}, **writer),
    )
    with steady_load(CLIENT_BASE, traffic, headers=API_HOST, connections=8, rate=60) as users:
        time.sleep(2)
        started = time.monotonic()
        workspace.make("deploy-rotate-secret", "NAME=redis_password")
        took = time.monotonic() - started
        time.sleep(2)
    assert users.failures() == [], f"{users.kinds()}\n{proxy_log(srv, env)}"
    print(
        f"measured: make deploy-rotate-secret NAME=redis_password {took:.0f} s, {users.summary()}"
    )
    assert here.read_text() == there.read_text() != old
    assert mode(here) == 0o444
    refused_old = run(
        [*current_compose(srv), "exec", "-T", "-e", f"REDISCLI_AUTH={old}", "redis",
         "redis-cli", "ping"],
        env=env, check=False,
    )  # fmt: skip
    assert "WRONGPASS" in refused_old.stdout + refused_old.stderr
    last = workspace.make("deploy-log").stdout.splitlines()[-1].split("\t")
    assert last[1:4:2] == ["rotated", "deploy-test"], last
