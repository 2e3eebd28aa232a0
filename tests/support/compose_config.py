"""`docker compose config` of the kit's files, as a fresh clone sees them (no .env, no secrets)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.support import ROOT
from tests.support.stack import run

PROD = ("compose.yaml", "compose.prod.yaml")
# What production needs in its environment; its secrets are files (SECRETS_DIR).
PROD_SECRETS = {"ACME_EMAIL": "ops@example.com", "API_DOMAIN": "api.example.com"}
# The production secret files, in the order make deploy sends them (deploy/lib.sh).
SECRET_NAMES = [
    "postgres_password",
    "postgres_app_password",
    "redis_password",
    "jwt_secret",
    "pgbackrest_cipher_pass",
    "pgbackrest_ssh_key",
]
# Each service gets the secret files it uses, and no other.
SECRETS_BY_SERVICE = {
    "db": {"postgres_password", "pgbackrest_cipher_pass"},
    "backup": {"pgbackrest_cipher_pass", "pgbackrest_ssh_key"},
    "migrate": {"postgres_password", "postgres_app_password"},
    "api": {"postgres_app_password", "redis_password", "jwt_secret"},
    "worker": {"postgres_app_password", "redis_password"},
    "scheduler": {"redis_password"},
    "redis": {"redis_password"},
}


def clean_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(extra)
    return env


def run_config(
    *files: str, env: dict[str, str] | None = None, check: bool = False
) -> subprocess.CompletedProcess[str]:
    args = ["docker", "compose", "--project-directory", str(ROOT)]
    for f in files or ("compose.yaml",):
        args += ["-f", str(ROOT / f)]
    return run(
        [*args, "config", "--format", "json"],
        cwd="/",
        env=env or clean_env(),
        check=check,
        timeout=60,
    )


def compose_config(*files: str, **env: str) -> dict[str, Any]:
    # check: a failure raises with the tails of compose's stdout and stderr.
    config: dict[str, Any] = json.loads(run_config(*files, env=clean_env(**env), check=True).stdout)
    return config


class ComposeLoader(yaml.SafeLoader):
    """Compose's merge tags (!override, !reset) read as the values they tag."""


ComposeLoader.add_multi_constructor(
    "!",
    lambda loader, _tag, node: (
        loader.construct_sequence(node)
        if isinstance(node, yaml.SequenceNode)
        else loader.construct_mapping(node)
        if isinstance(node, yaml.MappingNode)
        else loader.construct_scalar(node)
    ),
)


def load_compose_file(path: Path) -> dict[str, Any]:
    """One compose file as YAML, without Compose's merging or interpolation."""
    return yaml.load(path.read_text(), Loader=ComposeLoader) or {}  # noqa: S506 - a SafeLoader


def write_secret_files(directory: Path, **override: str) -> dict[str, str]:
    """The production secret files in a new 0700 directory, random unless overridden; their
    values. Each 0444: bind-mounted into containers of other users, the directory guards them."""
    directory.mkdir(mode=0o700)
    values = {name: secrets.token_hex(32) for name in SECRET_NAMES} | override
    for name, value in values.items():
        (directory / name).write_text(value + "\n")
        (directory / name).chmod(0o444)
    return values
