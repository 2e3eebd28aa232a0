"""gunicorn for `make dev` (Dockerfile, stage api-dev): the production configuration, reloading.

A thread of the master watches api/ and core/, where Compose's watch syncs changes in. A change
sends the master SIGHUP: gunicorn forks a new worker, which imports the app as it is on disk now,
and stops the old one. The master has already imported the libraries the app uses, so the worker
starts in a fraction of a second, and the listening socket stays open throughout. A change to a
module the master runs itself (this file, api/gunicorn_conf.py, api/shutdown.py and what they
import, core/settings.py among them) stops the master instead, and Docker starts the container
again (restart: unless-stopped).
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from api.gunicorn_conf import *  # noqa: F403 - every production setting, then the changes below
from api.gunicorn_conf import when_ready as _production_when_ready

log = logging.getLogger("dev.reload")

ROOT = Path(__file__).resolve().parent.parent
WATCHED = ("api", "core")
# What the app imports, loaded once in the master and inherited by every worker it forks.
LIBRARIES = (
    "fastapi",
    "sqlalchemy.ext.asyncio",
    "sqlalchemy.orm",
    "asyncpg",
    "redis.asyncio",
    "prometheus_client",
    "jwt",
)

# One worker, for the debugger to follow; the app is loaded there, never in the master.
workers = 1
preload_app = False


def _master_files() -> set[Path]:
    """The source files of the kit's modules this process has loaded."""
    files = set()
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None)
        if source and name.split(".")[0] in (*WATCHED, "dev"):
            files.add(Path(source).resolve())
    return files


def _watch(master_files: set[Path]) -> None:
    from watchfiles import PythonFilter, watch

    for changes in watch(*(ROOT / name for name in WATCHED), watch_filter=PythonFilter()):
        changed = {Path(path).resolve() for _, path in changes}
        if changed & master_files:
            log.warning("the server's own code changed: restarting the container")
            os.kill(os.getpid(), signal.SIGTERM)
            return
        log.info("code changed: a new worker", extra={"files": sorted(map(str, changed))})
        os.kill(os.getpid(), signal.SIGHUP)


def when_ready(server: object) -> None:
    _production_when_ready(server)
    for name in LIBRARIES:
        importlib.import_module(name)
    watcher = threading.Thread(target=_watch, args=(_master_files(),), name="dev-reload")
    watcher.daemon = True
    watcher.start()
