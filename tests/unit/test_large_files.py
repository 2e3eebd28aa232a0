"""The large-file check (.ci/large-files.sh) that the pre-commit hook and make lint run, on a
real git repository."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "large-files.sh"
MIB = 1024 * 1024


def check(repo: Path, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT), *files], cwd=repo, capture_output=True, text=True, timeout=30
    )


def repository(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "small.txt").write_text("small\n")
    (tmp_path / "uv.lock").write_bytes(b"x" * (2 * MIB))
    return tmp_path


def test_a_file_over_a_mebibyte_is_refused_by_name(tmp_path):
    repo = repository(tmp_path)
    (repo / "dist.whl").write_bytes(b"x" * (MIB + 1))
    proc = check(repo, "small.txt", "dist.whl", "uv.lock")
    assert proc.returncode == 1
    assert proc.stderr == "large-files: dist.whl is 1024 KiB, over 1024 KiB (only uv.lock may be)\n"


def test_small_files_and_uv_lock_pass(tmp_path):
    repo = repository(tmp_path)
    (repo / "exactly.bin").write_bytes(b"x" * MIB)
    assert check(repo, "small.txt", "exactly.bin", "./uv.lock", "deleted.txt").returncode == 0


def test_without_arguments_every_tracked_file_is_checked(tmp_path):
    repo = repository(tmp_path)
    (repo / "new.bin").write_bytes(b"x" * (2 * MIB))
    subprocess.run(["git", "add", "small.txt", "uv.lock"], cwd=repo, check=True)
    assert check(repo).returncode == 0, "a file git does not track is not checked"
    subprocess.run(["git", "add", "new.bin"], cwd=repo, check=True)
    proc = check(repo)
    assert proc.returncode == 1
    assert "new.bin is 2048 KiB" in proc.stderr
