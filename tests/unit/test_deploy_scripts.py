"""The deploy scripts' pure parts, run by bash without a server: tests/e2e/test_deploy.py plays
the whole deploy against a real sshd and Docker."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def shell_function(script: str, name: str) -> str:
    """One function of a script, as written there (from `name() {` to the `}` that closes it)."""
    text = (ROOT / script).read_text()
    match = re.search(rf"^{name}\(\) \{{.*?^\}}$", text, flags=re.S | re.M)
    assert match, f"{name} not in {script}"
    return match.group(0)


def bash(code: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code, "bash", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("interval", "seconds"),
    [("2s", "6"), ("500ms", "2"), ("1.5s", "5"), ("1m30s", "270"), ("10s", "30")],
)
def test_drain_wait_is_three_health_check_intervals_rounded_up(interval, seconds):
    code = shell_function("deploy/remote.sh", "duration_seconds") + '\nduration_seconds "$1" 3'
    proc = bash(code, interval)
    assert (proc.returncode, proc.stdout.strip()) == (0, seconds)


@pytest.mark.parametrize("interval", ["", "<no value>", "2", "two seconds", "0s", "-2s"])
def test_an_unusable_interval_label_is_refused(interval):
    code = shell_function("deploy/remote.sh", "duration_seconds") + '\nduration_seconds "$1" 3'
    proc = bash(code, interval)
    assert proc.returncode != 0
    assert proc.stdout == ""


def test_the_label_read_is_the_one_compose_sets():
    label = re.search(
        r"^HEALTHCHECK_INTERVAL_LABEL=(\S+)$", (ROOT / "deploy/remote.sh").read_text(), re.M
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
            shell_function("deploy/remote.sh", "sync_proxy_config"),
            shell_function("deploy/remote.sh", "drop_stale_proxy_config"),
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
