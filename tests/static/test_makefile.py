"""Makefile targets' own checks, which run before any container does."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess

import pytest

from tests.support import ROOT
from tests.support.stack import make

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def test_revision_without_a_message_says_how_to_call_it():
    env = {k: v for k, v in os.environ.items() if k != "MESSAGE"}
    # COMPOSE=false: had the check come after a compose command, this would fail differently.
    proc = make("revision", "COMPOSE=false", env=env, check=False, timeout=30)
    assert proc.returncode == 2
    assert 'usage: make revision MESSAGE="' in proc.stderr


def test_help_lists_every_target_with_one_line():
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^\.PHONY: (\S+)$", makefile, flags=re.M)
    text = re.sub(r"\x1b\[[0-9;]*m", "", make("help").stdout)
    helped = re.findall(r"^  ([a-z][a-z-]*) +(\S.*)$", text, flags=re.M)
    assert [name for name, _ in helped] == targets
    assert {"secrets", "deploy-trust"} <= set(targets)


def test_stack_targets_leave_the_compose_files_and_project_to_compose():
    """On a server, deploy's .env names the production overlay and project (COMPOSE_FILE,
    COMPOSE_PROJECT_NAME): a -f or -p here would override them."""
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^COMPOSE \?= docker compose$", makefile, flags=re.M)
    recipes = [line for line in makefile.splitlines() if "$(COMPOSE)" in line and line[:1] == "\t"]
    assert len(recipes) > 10
    for line in recipes:
        assert not re.search(r"\$\(COMPOSE\)\s+(-f|-p|--file|--project-name)\b", line), line


def test_make_secrets_creates_only_what_is_missing(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "jwt_secret").write_text("kept as it is")
    first = make("secrets", f"SECRETS_DIR={secrets}", check=False)
    assert first.returncode == 0, first.stderr
    created = [
        "postgres_password",
        "postgres_app_password",
        "redis_password",
        "pgbackrest_cipher_pass",
    ]
    made = re.findall(r"^created .*/(\w+)$", first.stdout, flags=re.M)
    assert made == [*created, "pgbackrest_ssh_key"]
    # An SSH key pair for the off-host copy: the private key is the secret, the .pub is for the
    # other machine's authorized_keys.
    assert (secrets / "pgbackrest_ssh_key").read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY")
    assert (secrets / "pgbackrest_ssh_key.pub").read_text().startswith("ssh-ed25519 ")
    assert (secrets / "jwt_secret").read_text() == "kept as it is"
    values = {(secrets / name).read_text() for name in created}
    assert len(values) == 4
    assert all(re.fullmatch(r"[0-9a-f]{64}", value) for value in values), "no newline either"
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    assert {stat.S_IMODE((secrets / name).stat().st_mode) for name in created} == {0o444}

    again = make("secrets", f"SECRETS_DIR={secrets}", check=False)
    assert again.returncode == 0
    assert "\ncreated " not in f"\n{again.stdout}"
    assert "nothing created" in again.stdout
    assert {(secrets / name).read_text() for name in created} == values


def test_the_default_secrets_directory_is_ignored_by_git():
    for path in ("secrets/jwt_secret", "secrets.production/jwt_secret"):
        ignored = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT, check=False)
        assert ignored.returncode == 0, f"{path} is not ignored"
