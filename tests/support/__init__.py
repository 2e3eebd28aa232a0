"""The tooling the tests and the benchmark (bench/) share: driving the compose stack
(stack.py), steady load (load.py), jobs (jobs.py), tokens (auth.py), the compose configuration
(compose_config.py), shell functions (shell.py), the deploy's test server (deploy.py), the
observability files (observability.py) and a Lambda Runtime API (lambda_runtime.py). Importing
any of it starts nothing; only calls do."""

from __future__ import annotations

from pathlib import Path

# The repository's root: every path the tests and the benchmark read is under it.
ROOT = Path(__file__).resolve().parents[2]
