"""The deploy and db scripts' shell functions, run by bash without a server."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.support import ROOT


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
