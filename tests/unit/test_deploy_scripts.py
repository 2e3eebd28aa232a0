"""The deploy scripts' pure parts, run by bash without a server: tests/e2e/full/test_deploy.py plays
the whole deploy against a real sshd and Docker."""

from __future__ import annotations

import getpass
import os
import re
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import ROOT
from tests.support.compose_config import SECRET_NAMES, load_compose_file
from tests.support.shell import bash, shell_function


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [("2s", "6"), ("500ms", "2"), ("1.5s", "5"), ("1m30s", "270"), ("10s", "30")],
)
def test_drain_wait_is_three_health_check_intervals_rounded_up(interval, seconds):
    code = shell_function("deploy/remote-lib.sh", "duration_seconds") + '\nduration_seconds "$1" 3'
    proc = bash(code, interval)
    assert (proc.returncode, proc.stdout.strip()) == (0, seconds)


@pytest.mark.parametrize("interval", ["", "<no value>", "2", "two seconds", "0s", "-2s"])
def test_an_unusable_interval_label_is_refused(interval):
    code = shell_function("deploy/remote-lib.sh", "duration_seconds") + '\nduration_seconds "$1" 3'
    proc = bash(code, interval)
    assert proc.returncode != 0
    assert proc.stdout == ""


@pytest.mark.parametrize(
    ("inspected", "seconds"),
    [("5s 3", "20"), ("2s 5", "12"), ("", "20"), ("<no value> <no value>", "20")],
)
def test_the_wait_for_unhealthy_is_the_healthcheck_retries_plus_one(inspected, seconds):
    """Docker's healthcheck of the drained container, as `docker inspect` prints it; a container
    without one gets a fixed bound rather than none."""
    code = "\n".join(
        [
            f"docker() {{ echo '{inspected}'; }}",
            shell_function("deploy/remote-lib.sh", "duration_seconds"),
            shell_function("deploy/remote-lib.sh", "unrouted_seconds"),
            "unrouted_seconds c0ffee",
        ]
    )
    proc = bash(code)
    assert (proc.returncode, proc.stdout.strip()) == (0, seconds)


def test_the_label_read_is_the_one_compose_sets():
    label = re.search(
        r"^HEALTHCHECK_INTERVAL_LABEL=(\S+)$", (ROOT / "deploy/remote-lib.sh").read_text(), re.M
    )
    assert label
    assert f"{label.group(1)}: " in (ROOT / "compose.yaml").read_text()


def test_proxy_config_follows_the_release_changed_files_only(tmp_path):
    """What deploy and rollback do to the directory Traefik watches: changed files replaced (by a
    rename: a new inode), unchanged ones left alone, and after the switch the files the release
    does not have removed."""
    releases, live = tmp_path / "releases", tmp_path / "proxy-dynamic"
    for release, files in {
        "r1": {"middlewares.yml": "m: 1\n", "tls.yml": "t: 1\n"},
        "r2": {"middlewares.yml": "m: 2\n", "tls.yml": "t: 1\n", "extra.yml": "e: 2\n"},
    }.items():
        (releases / release / "proxy" / "dynamic").mkdir(parents=True)
        for name, text in files.items():
            (releases / release / "proxy" / "dynamic" / name).write_text(text)
    live.mkdir()
    code = "\n".join(
        [
            f"RELEASES={releases} DEPLOY_PATH={tmp_path}",
            shell_function("deploy/remote-lib.sh", "sync_proxy_config"),
            shell_function("deploy/remote-lib.sh", "drop_stale_proxy_config"),
            'sync_proxy_config "$1"; drop_stale_proxy_config "$1"',
        ]
    )

    def contents() -> dict[str, str]:
        return {p.name: p.read_text() for p in live.iterdir()}

    assert bash(code, "r1").returncode == 0
    assert contents() == {"middlewares.yml": "m: 1\n", "tls.yml": "t: 1\n"}
    tls_inode = (live / "tls.yml").stat().st_ino
    assert bash(code, "r2").returncode == 0
    assert contents() == {"middlewares.yml": "m: 2\n", "tls.yml": "t: 1\n", "extra.yml": "e: 2\n"}
    assert (live / "tls.yml").stat().st_ino == tls_inode, "an unchanged file is not rewritten"
    assert bash(code, "r1").returncode == 0
    assert contents() == {"middlewares.yml": "m: 1\n", "tls.yml": "t: 1\n"}


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def release_tree(repo: Path) -> str:
    code = f"source {ROOT / 'deploy' / 'lib.sh'}\nrelease_tree"
    proc = bash(code, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def archived(repo: Path, tree: str) -> dict[str, str]:
    """The files `git archive TREE` ships, as deploy/lib.sh's upload_release unpacks them."""
    names = git(repo, "ls-tree", "-r", "--name-only", tree).split()
    return {name: git(repo, "show", f"{tree}:{name}") for name in names}


def test_a_dirty_release_ships_the_working_tree_it_was_built_from(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / ".gitignore").write_text("ignored.txt\n")
    (repo / "compose.yaml").write_text("committed\n")
    (repo / "gone.txt").write_text("deleted in the working tree\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "one")
    assert release_tree(repo) == git(repo, "rev-parse", "HEAD^{tree}").strip()

    (repo / "compose.yaml").write_text("changed, not committed\n")
    (repo / "gone.txt").unlink()
    (repo / "new.txt").write_text("untracked\n")
    (repo / "ignored.txt").write_text("ignored\n")
    status_before = git(repo, "status", "--porcelain")
    tree = release_tree(repo)
    assert archived(repo, tree) == {
        ".gitignore": "ignored.txt\n",
        "compose.yaml": "changed, not committed\n",
        "new.txt": "untracked\n",
    }
    assert git(repo, "status", "--porcelain") == status_before, "the real index is left alone"


def server_side(*scripts: str) -> str:
    """What deploy/lib.sh's remote sends the server for bash to read: the functions, then the
    entry point."""
    return "".join((ROOT / name).read_text() for name in ("deploy/remote-lib.sh", *scripts))


# remote.sh as the server runs it, on a temporary DEPLOY_PATH, with a stand-in for docker: a
# database when $DEPLOY_PATH/current exists; containers that never start; its calls in
# $DEPLOY_PATH/docker.calls. With $DEPLOY_PATH/steal-lock, the operator breaks the deploy's lock
# while it starts containers, and another deploy takes it.
FAKE_DOCKER = """#!/usr/bin/env bash
echo "$*" >>"$DEPLOY_PATH/docker.calls"
case "$*" in
  "version --format"*) echo 27.0.0 ;;
  "compose version") echo v2.30.0 ;;
  *" ps -q db") [[ ! -e $DEPLOY_PATH/current ]] || echo 0123456789ab ;;
  *" exec -T db sh -c command -v pgbackrest") [[ -e $DEPLOY_PATH/has-pgbackrest ]] || exit 1 ;;
  *" exec -T db "*) echo "PGDMP a dump" ;;
  *" exec -T --user postgres db sh -c "*) printf '0/3000028\n2026-12-01 03:00:00.5+00\n' ;;
  *" exec -T --user postgres db pgbackrest check") ;;
  *" config --quiet" | *" build api worker db") ;;
  *" up -d --wait db redis proxy backup")
    if [[ -e $DEPLOY_PATH/steal-lock ]]; then
      rm -rf "$DEPLOY_PATH/deploy.lock" && mkdir "$DEPLOY_PATH/deploy.lock"
      echo bob >"$DEPLOY_PATH/deploy.lock/owner"
      echo bobs-token >"$DEPLOY_PATH/deploy.lock/token"
    fi
    echo "container kit-db-1 is unhealthy" >&2; exit 1 ;;
  *) echo "fake docker: $*" >&2; exit 1 ;;
esac
"""


def remote(deploy_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    fake = deploy_path.parent / "fake-bin"
    if not fake.exists():
        fake.mkdir()
        (fake / "docker").write_text(FAKE_DOCKER)
        (fake / "docker").chmod(0o755)
    return subprocess.run(
        ["bash", "-s", "--", *args],
        input=server_side("deploy/remote.sh"),
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": f"{fake}:{os.environ['PATH']}",
            "DEPLOY_PATH": str(deploy_path),
            "DEPLOY_PROJECT": "kit-unit",
            "APP_IMAGE": "kit-unit",
            "DEPLOY_MIN_FREE_MB": "1",
            "DEPLOY_LOCK_TIMEOUT": "0",
            **env,
        },
    )


def test_a_stale_deploy_cannot_unlock_a_newer_one_and_the_operator_can(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    lock = srv / "deploy.lock"
    alice = remote(srv, "lock", "alice@laptop")
    assert alice.returncode == 0, alice.stderr
    alice_token = alice.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", alice_token)
    assert (lock / "owner").read_text().startswith("alice@laptop since ")

    # A second deploy waits (here: not at all), then fails naming the holder.
    busy = remote(srv, "lock", "bob@ci")
    assert busy.returncode == 75
    assert "another deploy holds the lock: alice@laptop" in busy.stderr

    # Alice's deploy hangs; the operator breaks its lock (make deploy-unlock), Bob deploys.
    broken = remote(srv, "unlock", "--force")
    assert broken.returncode == 0
    assert "alice@laptop" in broken.stderr
    assert not lock.exists()
    bob = remote(srv, "lock", "bob@ci")
    bob_token = bob.stdout.strip()
    assert bob_token != alice_token

    # Alice's deploy ends at last: its exit trap leaves Bob's lock alone, and says so.
    stale = remote(srv, "unlock", alice_token)
    assert stale.returncode == 0
    assert "no longer this deploy's" in stale.stderr
    assert (lock / "owner").read_text().startswith("bob@ci since ")
    assert remote(srv, "unlock").returncode == 0, "no token: a trap from an older deploy.sh"
    assert lock.exists()

    assert remote(srv, "unlock", bob_token).returncode == 0
    assert not lock.exists()
    nothing = remote(srv, "unlock", "--force")
    assert (nothing.returncode, nothing.stderr.strip()) == (0, "no lock to break")


# A local sshd as the server: its host key, and for this user with client_key, a login whose
# `docker` is a stand-in (FAKE_DOCKER): a deploy runs up to the containers, which it cannot start.
@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("no sshd (openssh-server)")
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "other_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)], check=True
        )
    (home / "bin").mkdir()
    (home / "bin" / "docker").write_text(FAKE_DOCKER)
    (home / "bin" / "docker").chmod(0o755)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    (home / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home / 'host_key'}\n"
        f"AuthorizedKeysFile {home / 'client_key.pub'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
        f"PidFile {home / 'sshd.pid'}\nSetEnv PATH={home / 'bin'}:/usr/local/bin:/usr/bin:/bin\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)
    daemon = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(home / "sshd_config")], stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while True:
        assert daemon.poll() is None, "sshd did not start"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "sshd does not listen"
            time.sleep(0.05)
    yield home, port
    daemon.terminate()
    daemon.wait(timeout=10)


def deploy_env(home: Path, port: int, **extra: str) -> dict[str, str]:
    env_file = home / "production.env"
    env_file.write_text(CLEAN_ENV)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "DEPLOY_SETTINGS": str(home / "no-deploy.env"),
        "DEPLOY_HOST": "deploy@127.0.0.1",
        "DEPLOY_PORT": str(port),
        "DEPLOY_PATH": "/srv/kit",
        "DEPLOY_ENV_FILE": str(env_file),
        "DEPLOY_SECRETS_DIR": str(secrets_dir(home / "secrets")),
        "DEPLOY_KNOWN_HOSTS": str(home / "known_hosts"),
        **extra,
    }


def run_here(args: list[str], env: dict[str, str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, **kwargs
    )


def fingerprint(public_key: Path) -> str:
    return run_here(["ssh-keygen", "-lf", str(public_key)], dict(os.environ)).stdout.split()[1]


def pin(known_hosts: Path, port: int, public_key: Path) -> None:
    key_type, key = public_key.read_text().split()[:2]
    known_hosts.write_text(f"[127.0.0.1]:{port} {key_type} {key}\n")


def test_an_unpinned_server_is_refused_before_connecting(sshd):
    home, port = sshd
    (home / "known_hosts").unlink(missing_ok=True)
    proc = run_here(["deploy/deploy.sh", "deploy"], deploy_env(home, port))
    assert proc.returncode == 1
    assert "the server's host key is not pinned: run make deploy-trust" in proc.stderr
    assert "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub" in proc.stderr


def test_deploy_trust_pins_the_key_it_shows_once_confirmed(sshd):
    home, port = sshd
    known_hosts = home / "known_hosts"
    known_hosts.unlink(missing_ok=True)
    env = deploy_env(home, port)
    unconfirmed = run_here(
        ["make", "--no-print-directory", "deploy-trust"], env, stdin=subprocess.DEVNULL
    )
    assert unconfirmed.returncode != 0
    assert fingerprint(home / "host_key.pub") in unconfirmed.stdout
    assert "nothing pinned (YES=1" in unconfirmed.stderr
    assert not known_hosts.exists()

    pin(known_hosts, port, home / "other_key.pub")  # replaced, not kept beside it
    trusted = run_here(["make", "--no-print-directory", "deploy-trust", "YES=1"], env)
    assert trusted.returncode == 0, trusted.stderr
    assert fingerprint(home / "host_key.pub") in trusted.stdout
    key_type, key = (home / "host_key.pub").read_text().split()[:2]
    assert known_hosts.read_text() == f"[127.0.0.1]:{port} {key_type} {key}\n"
    assert not known_hosts.with_name("known_hosts.old").exists()


@pytest.mark.parametrize(
    "ssh_opts", ["", "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"]
)
def test_a_changed_host_key_stops_a_deploy(sshd, ssh_opts):
    """Whatever DEPLOY_SSH_OPTS says: ssh keeps the first value it is given of an option."""
    home, port = sshd
    pin(home / "known_hosts", port, home / "other_key.pub")
    proc = run_here(
        ["deploy/deploy.sh", "deploy"], deploy_env(home, port, DEPLOY_SSH_OPTS=ssh_opts)
    )
    assert proc.returncode == 1
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in proc.stderr, "ssh's own words are shown"
    assert (
        f"the server's host key is not the one pinned for [127.0.0.1]:{port} in "
        f"{home / 'known_hosts'}: someone may be between you and the server"
    ) in proc.stderr
    assert "cannot reach" not in proc.stderr


def test_with_the_pinned_key_ssh_gets_as_far_as_logging_in(sshd):
    home, port = sshd
    pin(home / "known_hosts", port, home / "host_key.pub")
    proc = run_here(["deploy/deploy.sh", "deploy"], deploy_env(home, port))
    assert proc.returncode == 1
    assert "Permission denied" in proc.stderr, proc.stderr
    assert f"cannot reach deploy@127.0.0.1 over SSH (port {port})" in proc.stderr


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_server_keeps_its_files_to_the_deploying_user(tmp_path):
    srv = tmp_path / "srv"
    # As the kit before this left it: made under a umask of 022.
    (srv / "backups").mkdir(parents=True)
    (srv / "releases" / "r1").mkdir(parents=True)
    (srv / "backups" / "before-r1.dump").write_text("PGDMP")
    for path in (srv, srv / "backups", srv / "releases"):
        path.chmod(0o755)
    (srv / "backups" / "before-r1.dump").chmod(0o644)
    proc = remote(srv, "preflight")
    assert proc.returncode == 0, proc.stderr
    for directory in (srv, srv / "releases", srv / "backups", srv / "secrets"):
        assert mode(directory) == 0o700, directory
    assert mode(srv / "backups" / "before-r1.dump") == 0o600
    assert mode(srv / "proxy-dynamic") == 0o755, "Traefik reads it without CAP_DAC_OVERRIDE"

    (srv / "current").symlink_to("releases/r1")
    proc = remote(srv, "backup", "manual")
    assert proc.returncode == 0, proc.stderr
    assert (srv / "backups" / "manual.dump").read_text() == "PGDMP a dump\n"
    assert mode(srv / "backups" / "manual.dump") == 0o600
    # A database with pgBackRest: a restore point, archived, and where it is written down.
    (srv / "has-pgbackrest").touch()
    proc = remote(srv, "backup", "before-r2")
    assert proc.returncode == 0, proc.stderr
    assert "pg_create_restore_point('before-r2')" in (srv / "docker.calls").read_text()
    assert "pgbackrest check" in (srv / "docker.calls").read_text(), "archived before it counts"
    assert (srv / "backups" / "restore-points").read_text() == (
        "2026-12-01 03:00:00.5+00\tbefore-r2\n"
    )
    assert mode(srv / "backups" / "restore-points") == 0o600
    assert "make restore POINT=before-r2" in proc.stderr
    assert remote(srv, "record", "success", "r1", "alice", "release 1").returncode == 0
    assert mode(srv / "deploy.log") == 0o600
    assert remote(srv, "lock", "alice").returncode == 0
    assert mode(srv / "deploy.lock") == 0o700
    assert mode(srv / "deploy.lock" / "token") == 0o600


def test_proxy_config_stays_readable_to_traefik(tmp_path):
    srv = tmp_path / "srv"
    dynamic = srv / "releases" / "r1" / "proxy" / "dynamic"
    dynamic.mkdir(parents=True)
    (dynamic / "tls.yml").write_text("t: 1\n")
    (srv / "proxy-dynamic").mkdir()
    code = "\n".join(
        [
            "umask 077",
            f"RELEASES={srv / 'releases'} DEPLOY_PATH={srv}",
            shell_function("deploy/remote-lib.sh", "sync_proxy_config"),
            "sync_proxy_config r1",
        ]
    )
    assert bash(code).returncode == 0
    assert mode(srv / "proxy-dynamic" / "tls.yml") == 0o644


def lib_secrets() -> list[str]:
    proc = bash(f"source {ROOT / 'deploy' / 'lib.sh'}\nprintf '%s\\n' \"${{SECRETS[@]}}\"")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_the_secret_names_are_the_ones_the_kit_uses():
    assert lib_secrets() == SECRET_NAMES


def test_the_deployed_secrets_are_the_ones_the_production_overlay_reads():
    overlay = load_compose_file(ROOT / "compose.prod.yaml")
    if "secrets" not in overlay:
        pytest.skip("compose.prod.yaml reads no secret files yet")
    # The observability profile's secrets are not shipped by make deploy: on the server,
    # `make observability-secrets SECRETS_DIR=$DEPLOY_PATH/secrets` makes them
    # (docs/observability.md).
    profile_only = {
        "alertmanager_webhook_url",
        "alertmanager_smtp_password",
        "redis_exporter_password_map",
        "grafana_admin_password",
    }
    assert sorted(lib_secrets()) == sorted(set(overlay["secrets"]) - profile_only)
    for name, spec in overlay["secrets"].items():
        assert spec == {"file": f"${{SECRETS_DIR:-./secrets}}/{name}"}, "where deploy puts it"


def secrets_dir(path: Path, **files: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in SECRET_NAMES:
        (path / name).write_text(files.get(name, f"{name}-value-0123456789abcdef0123456789"))
    return path


def check_secrets(cwd: Path, secrets: Path, env_file: str) -> subprocess.CompletedProcess[str]:
    (cwd / "production.env").write_text(env_file)
    code = (
        f"source {ROOT / 'deploy' / 'lib.sh'}\n"
        f"DEPLOY_SECRETS_DIR={secrets} DEPLOY_ENV_FILE={cwd / 'production.env'}\ncheck_secrets"
    )
    return bash(code, cwd=cwd)


CLEAN_ENV = (
    "API_DOMAIN=api.example.com\nPOSTGRES_USER=app\n"
    # Emptied, commented out or left out: nothing to move.
    "JWT_SECRET=\nPOSTGRES_APP_PASSWORD=''\n# REDIS_PASSWORD=old\n"
)


def test_a_deploy_takes_its_secrets_from_files(tmp_path):
    proc = check_secrets(tmp_path, secrets_dir(tmp_path / "secrets"), CLEAN_ENV)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_a_deploy_refuses_a_missing_or_empty_secret_naming_it(tmp_path, name):
    secrets = secrets_dir(tmp_path / "secrets")
    (secrets / name).unlink()
    missing = check_secrets(tmp_path, secrets, CLEAN_ENV)
    assert missing.returncode == 1
    assert f"{secrets}/{name} is missing or empty" in missing.stderr
    assert "make secrets" in missing.stderr
    (secrets / name).write_text("")
    empty = check_secrets(tmp_path, secrets, CLEAN_ENV)
    assert empty.returncode == 1
    assert f"{secrets}/{name} is missing or empty" in empty.stderr


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("POSTGRES_PASSWORD=hunter2", "POSTGRES_PASSWORD"),
        ("POSTGRES_APP_PASSWORD=app-secret", "POSTGRES_APP_PASSWORD"),
        ('export REDIS_PASSWORD = "r3dis"', "REDIS_PASSWORD"),
        ("  JWT_SECRET=0123456789abcdef0123456789abcdef", "JWT_SECRET"),
    ],
)
def test_a_deploy_refuses_an_env_file_that_still_holds_a_secret(tmp_path, line, name):
    """The upgrade from the kit that kept them in the env file: say where each value goes."""
    proc = check_secrets(tmp_path, secrets_dir(tmp_path / "secrets"), CLEAN_ENV + line + "\n")
    assert proc.returncode == 1
    assert f"still sets {name}" in proc.stderr
    assert f"{tmp_path}/secrets/{name.lower()}" in proc.stderr
    assert line.split("=", 1)[1].strip(' "') not in proc.stderr, "the value is not echoed"


def test_a_deploy_refuses_secrets_git_would_commit(tmp_path):
    git(tmp_path, "init", "-q")
    secrets = secrets_dir(tmp_path / "prod-secrets")
    refused = check_secrets(tmp_path, secrets, CLEAN_ENV)
    assert refused.returncode == 1
    assert "git does not ignore it" in refused.stderr
    (tmp_path / ".gitignore").write_text("/prod-secrets/\n")
    assert check_secrets(tmp_path, secrets, CLEAN_ENV).returncode == 0


def upload(srv: Path, **files: str) -> None:
    """What deploy/lib.sh's upload_secrets leaves on the server for install_secrets."""
    incoming = srv / "secrets" / ".incoming"
    incoming.mkdir(parents=True)
    for name, text in files.items():
        (incoming / name).write_text(text)


def test_secrets_are_installed_readable_behind_a_closed_directory(tmp_path):
    srv = tmp_path / "srv"
    srv.mkdir()
    assert remote(srv, "preflight").returncode == 0
    upload(srv, **{name: f"{name}-1" for name in SECRET_NAMES})
    proc = remote(srv, "install_secrets", *SECRET_NAMES)
    assert proc.returncode == 0, proc.stderr
    secrets = srv / "secrets"
    assert mode(secrets) == 0o700
    assert sorted(p.name for p in secrets.iterdir()) == sorted(SECRET_NAMES), ".incoming is gone"
    for name in SECRET_NAMES:
        assert (secrets / name).read_text() == f"{name}-1"
        assert mode(secrets / name) == 0o444, "containers read it as other users"

    # A changed secret is replaced by a rename; an unchanged one is left as it is.
    inode = (secrets / "jwt_secret").stat().st_ino
    upload(srv, **{name: f"{name}-1" for name in SECRET_NAMES} | {"redis_password": "rotated"})
    assert remote(srv, "install_secrets", *SECRET_NAMES).returncode == 0
    assert (secrets / "redis_password").read_text() == "rotated"
    assert mode(secrets / "redis_password") == 0o444
    assert (secrets / "jwt_secret").stat().st_ino == inode

    upload(srv, **{name: "x" for name in SECRET_NAMES if name != "jwt_secret"})
    proc = remote(srv, "install_secrets", *SECRET_NAMES)
    assert proc.returncode == 1
    assert "secret jwt_secret did not arrive" in proc.stderr


def release_env(**settings: str) -> dict[str, str]:
    """What deploy/lib.sh's release_env appends to a release's .env, as Compose reads it."""
    code = shell_function("deploy/lib.sh", "release_env") + '\nrelease_env "$1"'
    env = {"PATH": os.environ["PATH"], **settings}
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code, "bash", "r1"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_a_release_env_makes_plain_compose_the_deployed_production_project():
    """On the server, `docker compose` (and every make target) in current/ reads these."""
    env = release_env(APP_IMAGE="kit", DEPLOY_PATH="/srv/kit", DEPLOY_PROJECT="kit-prod")
    assert env == {
        "APP_IMAGE": "kit",
        "APP_TAG": "r1",
        "PROXY_DYNAMIC_DIR": "/srv/kit/proxy-dynamic",
        "SECRETS_DIR": "/srv/kit/secrets",
        "COMPOSE_FILE": "compose.yaml:compose.prod.yaml",
        "COMPOSE_PROJECT_NAME": "kit-prod",
    }
    assert all((ROOT / name).is_file() for name in env["COMPOSE_FILE"].split(":"))


@pytest.mark.parametrize("stolen", [False, True], ids=["own lock", "lock taken over"])
def test_a_deploy_ships_the_release_and_secrets_then_unlocks_only_its_own_lock(
    sshd, tmp_path, stolen
):
    """make deploy over real SSH, up to the containers (the stand-in docker never starts them):
    the release and its .env, the secrets, the modes, the log, and the lock released by token."""
    home, port = sshd
    pin(home / "known_hosts", port, home / "host_key.pub")
    srv = tmp_path / "srv"
    srv.mkdir()
    if stolen:
        (srv / "steal-lock").touch()
    env = deploy_env(
        home,
        port,
        DEPLOY_HOST=f"{getpass.getuser()}@127.0.0.1",
        DEPLOY_PATH=str(srv),
        DEPLOY_SSH_OPTS=f"-i {home / 'client_key'}",
        DEPLOY_IMAGES="build",
        DEPLOY_ALLOW_DIRTY="1",
        DEPLOY_PROJECT="kit-unit",
        DEPLOY_WHO="alice@laptop",
        DEPLOY_MIN_FREE_MB="1",
    )
    secrets = Path(env["DEPLOY_SECRETS_DIR"])
    proc = run_here(["deploy/deploy.sh", "deploy"], env)
    assert proc.returncode == 1
    assert "failed; the previous release is still serving" in proc.stderr, proc.stderr

    (release,) = (srv / "releases").iterdir()
    dotenv = (release / ".env").read_text()
    assert dotenv.startswith(CLEAN_ENV)
    assert dotenv.endswith(
        f"SECRETS_DIR={srv}/secrets\nCOMPOSE_FILE=compose.yaml:compose.prod.yaml\n"
        "COMPOSE_PROJECT_NAME=kit-unit\n"
    )
    assert mode(release / ".env") == 0o600
    assert {p.name: p.read_text() for p in (srv / "secrets").iterdir()} == {
        name: (secrets / name).read_text() for name in SECRET_NAMES
    }
    assert {mode(p) for p in (srv / "secrets").iterdir()} == {0o444}
    for private in (srv, srv / "releases", srv / "backups", srv / "secrets"):
        assert mode(private) == 0o700, private
    calls = (srv / "docker.calls").read_text()
    assert f"-f {release}/compose.yaml -f {release}/compose.prod.yaml config --quiet" in calls
    assert "\tfailed\t" in (srv / "deploy.log").read_text()

    if stolen:
        assert (srv / "deploy.lock" / "owner").read_text() == "bob\n"
        assert "the deploy lock is no longer this deploy's" in proc.stderr
    else:
        assert not (srv / "deploy.lock").exists()
        assert "no longer this deploy's" not in proc.stderr
