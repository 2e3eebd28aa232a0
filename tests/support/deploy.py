"""What the deploy and Swarm tests share: the production secrets as files, a clone to deploy
from, releases that answer with their number, and the workspace whose make runs the deploy.
The SSH server they deploy to is a fixture (`server`, tests/e2e/full/conftest.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import NamedTuple

from tests.support import ROOT
from tests.support.stack import make, run

SSH_PORT = int(os.environ.get("KIT_TEST_SSH_PORT", "52222"))
# The production secrets, as files (DEPLOY_SECRETS_DIR): the JWT secret is 32 bytes or more.
SECRETS = {
    "postgres_password": "deploy-test-postgres-0b6f2e",
    "postgres_app_password": "deploy-test-app-4c1d9a",
    "redis_password": "deploy-test-redis-7e3a51",
    "jwt_secret": "deploy-test-jwt-secret-0123456789abcdef",
    "pgbackrest_cipher_pass": "deploy-test-pgbackrest-5d0c7f",
    # Read only with an off-host copy configured (BACKUP_OFFHOST_HOST), which this test has not.
    "pgbackrest_ssh_key": "deploy-test-not-a-key",
}
BROKEN_HEALTH = 'return JSONResponse({"broken": 1}, 500)'
HEALTH_PATCH = (
    'return JSONResponse({"status": "ok"})',
    'return JSONResponse({"status": "ok", "release": %s})',
)


class Workspace(NamedTuple):
    """A clone to deploy from (source), the server's DEPLOY_PATH (srv) and the environment
    make deploy runs with (env)."""

    source: Path
    srv: Path
    env: dict[str, str]

    def make(self, *target: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """make TARGET in the clone, as an operator deploys."""
        return make(*target, cwd=self.source, env=self.env, check=check)


def deploy_checkout(root: Path, who: str) -> tuple[Path, Path]:
    """Under root: a clone of this repository to deploy from, committing as `who`, and the
    production secret files (SECRETS) in a 0700 directory."""
    source = root / "src"
    run(["git", "clone", "-q", str(ROOT), str(source)])
    run(["git", "config", "user.email", f"{who.replace(' ', '-')}@example.com"], cwd=source)
    run(["git", "config", "user.name", who], cwd=source)
    secrets = root / "secrets"
    secrets.mkdir(mode=0o700)
    for name, value in SECRETS.items():
        (secrets / name).write_text(value)
    return source, secrets


def commit_release(source: Path, release: int | str, *, commit: bool = True) -> None:
    """The clone's /health answers with `release` (a number, or "broken": a 500)."""
    ops = source / "api" / "routes" / "ops.py"
    text = ops.read_text().replace(BROKEN_HEALTH, HEALTH_PATCH[0])
    for marker in (HEALTH_PATCH[0], *(HEALTH_PATCH[1] % n for n in range(10))):
        text = text.replace(marker, HEALTH_PATCH[1] % release)
    if release == "broken":
        text = text.replace(HEALTH_PATCH[1] % "broken", BROKEN_HEALTH)
    ops.write_text(text)
    if commit:
        run(["git", "commit", "-q", "-am", f"release {release}"], cwd=source)
