"""The Prometheus multiprocess directory (PROMETHEUS_MULTIPROC_DIR), emptied when a server starts.

Both the api's gunicorn master and the worker's main process do it before any child process
exists: samples of this container's previous run (a restart keeps its filesystem) must not be
merged into this one's.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def reset_metrics_directory(directory: str | None) -> None:
    """Empty (or create) directory; None, no multiprocess metrics: nothing to do."""
    if directory:
        shutil.rmtree(directory, ignore_errors=True)
        Path(directory).mkdir(parents=True, exist_ok=True)
