"""`docker compose config` of the kit's files, as a fresh clone sees them (no .env, no secrets)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def clean_env(**extra: str) -> dict[str, str]:
    keep = ("PATH", "HOME", "DOCKER_HOST", "DOCKER_CONFIG")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(extra)
    return env


def run_config(*files: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["docker", "compose", "--project-directory", str(ROOT)]
    for f in files or ("compose.yaml",):
        args += ["-f", str(ROOT / f)]
    return subprocess.run(
        [*args, "config", "--format", "json"],
        capture_output=True,
        text=True,
        env=env or clean_env(),
        cwd="/",
        timeout=60,
    )


def compose_config(*files: str, **env: str) -> dict[str, Any]:
    proc = run_config(*files, env=clean_env(**env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)
