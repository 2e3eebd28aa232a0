"""Makefile targets' own checks, which run before any container does."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.static.compose_config import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def test_revision_without_a_message_says_how_to_call_it():
    env = {k: v for k, v in os.environ.items() if k != "MESSAGE"}
    # COMPOSE=false: had the check come after a compose command, this would fail differently.
    proc = subprocess.run(
        ["make", "--no-print-directory", "revision", "COMPOSE=false"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert 'usage: make revision MESSAGE="' in proc.stderr


def make(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_help_lists_every_target_with_one_line():
    makefile = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^\.PHONY: (\S+)$", makefile, flags=re.M)
    text = re.sub(r"\x1b\[[0-9;]*m", "", make("help").stdout)
    helped = re.findall(r"^  ([a-z][a-z-]*) +(\S.*)$", text, flags=re.M)
    assert [name for name, _ in helped] == targets
    assert "deploy-trust" in targets
