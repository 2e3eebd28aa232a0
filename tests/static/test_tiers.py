"""The test tiers come from the folders (tests/conftest.py): `make test` (-m "not full") selects
every test outside tests/e2e/full/ and none inside it, so a file joins a tier where it is saved."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.support import ROOT

FULL = "tests/e2e/full/"


def test_make_test_selects_every_file_but_the_full_tier():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r'^test: .*\n\tuv run --frozen pytest -m "not full"$', makefile, re.M)
    assert re.search(r"^test-all: .*\n\tuv run --frozen pytest$", makefile, re.M)
    folders = ["tests/integration", "tests/e2e"]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "not full", *folders],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    selected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    on_disk = {
        path.relative_to(ROOT).as_posix()
        for folder in folders
        for path in (ROOT / folder).rglob("test_*.py")
    }
    assert selected == {path for path in on_disk if not path.startswith(FULL)}
    assert any(path.startswith(FULL) for path in on_disk)
    assert re.search(r"\(\d+ deselected\)", proc.stdout), proc.stdout[-500:]
