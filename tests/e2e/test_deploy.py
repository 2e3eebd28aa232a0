"""make deploy against a real SSH server: an sshd on a loopback port, with this machine's Docker
Engine behind it and its own deploy path. Release 1, release 2 under load (zero failed requests),
a broken release 3 (deployed uncommitted) that must leave release 2 serving, a rollback to
release 1, the lock, the log and the backups."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests import stack as stack_module
from tests.stack import run, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", autouse=True)
def _parts() -> None:
    """A production deploy needs an SSH server and the proxy."""
    stack_module.require(Path("/usr/sbin/sshd").exists(), "sshd (openssh-server)")
    stack_module.require(
        stack_module.image_exists(stack_module.TRAEFIK_IMAGE), stack_module.TRAEFIK_IMAGE
    )


SSH_PORT = int(os.environ.get("KIT_TEST_SSH_PORT", "52222"))
HTTPS_PORT = 38443
PROJECT = "kit-deploy"
DRAIN_FILE = "/tmp/kit-deploy-test.drain"  # noqa: S108 - in the api container's tmpfs
HEALTH_PATCH = (
    'return JSONResponse({"status": "ok"})',
    'return JSONResponse({"status": "ok", "release": %s})',
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """sshd on 127.0.0.1:SSH_PORT accepting one generated key, for root on this machine."""
    home = tmp_path_factory.mktemp("sshd")
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "host_key")])
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / "client_key")])
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    config = home / "sshd_config"
    config.write_text(
        f"Port {SSH_PORT}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        f"PasswordAuthentication no\nStrictModes no\nUsePAM no\nPidFile {home / 'sshd.pid'}\n"
        "MaxSessions 50\nMaxStartups 50\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    daemon = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)])
    time.sleep(0.5)
    assert daemon.poll() is None, "sshd did not start"
    yield home
    daemon.terminate()
    daemon.wait(timeout=10)


@pytest.fixture(scope="module")
def workspace(server, tmp_path_factory):
    """A clone of this repository to deploy from, its production env, and the server's path."""
    root = tmp_path_factory.mktemp("deploy")
    source = root / "src"
    run(["git", "clone", "-q", str(stack_module.ROOT), str(source)])
    run(["git", "config", "user.email", "deploy-test@example.com"], cwd=source)
    run(["git", "config", "user.name", "deploy test"], cwd=source)
    env_file = root / "production.env"
    env_file.write_text(
        "POSTGRES_PASSWORD=deploy-test-db\nREDIS_PASSWORD=deploy-test-redis\n"
        "JWT_SECRET=deploy-test-jwt-secret-0123456789\nACME_EMAIL=ops@example.com\n"
        "API_DOMAIN=api.localhost\n"
        # Nothing leaves this machine: the ACME directory is a closed loopback port.
        "ACME_CA_SERVER=https://127.0.0.1:9/directory\n"
        f"HTTP_PORT=38080\nHTTPS_PORT={HTTPS_PORT}\nEDGE_SUBNET=172.30.252.0/24\n"
        f"NOFILE_LIMIT={stack_module.compose_env()['NOFILE_LIMIT']}\n"
        # Not the default: the deploy must drain through the api's own setting.
        f"DRAIN_FILE={DRAIN_FILE}\n"
    )
    env = {
        **stack_module.compose_env(),
        "DEPLOY_HOST": "root@127.0.0.1",
        "DEPLOY_PORT": str(SSH_PORT),
        "DEPLOY_PATH": str(root / "srv"),
        "DEPLOY_ENV_FILE": str(env_file),
        "DEPLOY_PROJECT": PROJECT,
        "DEPLOY_SSH_OPTS": f"-i {server / 'client_key'} -o StrictHostKeyChecking=no "
        "-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR",
        "DEPLOY_HEALTH_URL": f"https://api.localhost:{HTTPS_PORT}/ready",
        "DEPLOY_HEALTH_CURL_OPTS": f"-k --resolve api.localhost:{HTTPS_PORT}:127.0.0.1",
        "DEPLOY_HEALTH_TIMEOUT": "90",
        "DEPLOY_MIN_FREE_MB": "100",
        "DEPLOY_WHO": "deploy-test",
        "APP_IMAGE": "kit-deploy-test",
    }
    yield source, root / "srv", env
    srv = root / "srv"
    compose = (
        current_compose(srv) if (srv / "current").exists() else ["docker", "compose", "-p", PROJECT]
    )
    run([*compose, "down", "-v", "--remove-orphans", "--timeout", "5"], check=False, env=env)
    images = run(["docker", "images", "-q", "--filter", "reference=kit-deploy-test-*"], check=False)
    if images.stdout.split():
        run(["docker", "rmi", "-f", *set(images.stdout.split())], check=False)


def make(workspace, *target: str, check=True):
    source, _, env = workspace
    # A deploy builds images and waits on health checks: longer than run()'s default allows.
    return run(
        ["make", "--no-print-directory", *target], cwd=source, env=env, check=check, timeout=900
    )


def commit_release(source: Path, release: int | str, *, commit: bool = True) -> None:
    ops = source / "api" / "routes" / "ops.py"
    text = ops.read_text()
    for marker in (HEALTH_PATCH[0], *(HEALTH_PATCH[1] % n for n in range(10))):
        text = text.replace(marker, HEALTH_PATCH[1] % release)
    if release == "broken":
        text = text.replace(HEALTH_PATCH[1] % "broken", 'return JSONResponse({"broken": 1}, 500)')
    ops.write_text(text)
    if commit:
        run(["git", "commit", "-q", "-am", f"release {release}"], cwd=source)


def https_client() -> httpx.Client:
    return httpx.Client(
        base_url=f"https://127.0.0.1:{HTTPS_PORT}",
        headers={"Host": "api.localhost"},
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
    proc = run(
        [*current_compose(srv), "logs", "--no-color", "--tail", "80", "proxy"], env=env, check=False
    )
    return proc.stdout[-6000:]


def proxy_files(directory: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in directory.iterdir() if p.is_file()}


def releases(srv: Path) -> list[str]:
    return sorted(p.name for p in (srv / "releases").iterdir())


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
    make(workspace, "deploy")
    client = https_client()
    wait_until(lambda: serving_release(client) == 1, within=30)
    release_1 = releases(srv)[-1]
    assert (srv / "current").resolve().name == release_1
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
    commit_release(source, 2)
    with SteadyLoad() as load:
        time.sleep(2)
        deployed = make(workspace, "deploy")
        wait_until(lambda: load.releases_seen[-1] == 2, within=30)
        time.sleep(2)
    assert set(load.outcomes) == {"200"}, (
        f"failed requests during the deploy: {load.outcomes}\n{proxy_log(srv, env)}"
    )
    assert load.outcomes["200"] > 100
    # Old and new serve side by side while the new ones prove healthy; then only the new.
    assert load.releases_seen[0] == 1
    assert load.releases_seen[-1] == 2
    assert {serving_release(client) for _ in range(30)} == {2}
    release_2 = releases(srv)[-1]
    # The old containers (production runs 2) drained through DRAIN_FILE of their settings, for
    # three rounds of the 2 s health-check interval on their Traefik label.
    assert f"drain on: {DRAIN_FILE}" in deployed.stderr
    assert "draining 2 old api container(s) for 6s" in deployed.stderr
    assert (srv / "proxy-dynamic" / "middlewares.yml").read_text().endswith("release 2\n")
    assert client.get(f"/items/{item.json()['id']}").status_code == 200

    # Release 3 fails its health check: the deploy fails, release 2 keeps serving throughout.
    # It is left uncommitted (DEPLOY_ALLOW_DIRTY=1), with an untracked file: the release ships
    # the working tree its images were built from, not HEAD's files.
    commit_release(source, "broken", commit=False)
    (source / "api" / "dirty-marker.txt").write_text("untracked\n")
    env["DEPLOY_ALLOW_DIRTY"] = "1"
    with SteadyLoad() as load:
        failed = make(workspace, "deploy", check=False)
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
    make(workspace, "rollback", f"RELEASE={release_1}")
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
    locked = make(workspace, "deploy", check=False)
    assert locked.returncode != 0
    assert "alice@laptop" in locked.stderr
    make(workspace, "deploy-unlock")
    assert not (srv / "deploy.lock").exists()

    # The log: every deploy, with who, release and result, in order.
    log = make(workspace, "deploy-log").stdout.splitlines()
    results = [line.split("\t")[1] for line in log]
    assert results == ["success", "success", "failed", "rollback"], log
    assert all("\tdeploy-test\t" in line for line in log)

    # Backups were taken before each migration after the first release.
    dumps = sorted((srv / "backups").glob("before-*.dump"))
    assert len(dumps) >= 2
    assert all(d.stat().st_size > 1000 for d in dumps)
