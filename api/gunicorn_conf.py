"""gunicorn configuration: `gunicorn -c python:api.gunicorn_conf api.main:app`.

Every value comes from core/settings.py (environment variables), so the same image runs with 1
worker on a laptop, the container's CPU quota on a server, and on whatever $PORT a platform sets.
"""

from __future__ import annotations

import gc
import signal
from pathlib import Path
from types import FrameType
from typing import Protocol

from prometheus_client import multiprocess

from api.drain import set_draining
from core.logs import logging_config
from core.metrics_dir import reset_metrics_directory
from core.settings import get_settings

_settings = get_settings()

bind = _settings.bind_address
workers = _settings.gunicorn_workers
worker_class = "api.shutdown.GracefulUvicornWorker"
timeout = _settings.gunicorn_timeout
graceful_timeout = _settings.gunicorn_graceful_timeout
keepalive = _settings.gunicorn_keep_alive
max_requests = _settings.gunicorn_max_requests
max_requests_jitter = _settings.gunicorn_max_requests_jitter
preload_app = _settings.gunicorn_preload_app
loglevel = _settings.log_level
accesslog = None
logconfig_dict = logging_config(_settings.log_level)
# gunicorn >= 25's runtime control socket: the kit changes workers through the environment and a
# recreate, and the socket's default directory is not writable for the app user.
control_socket_disable = True
# Heartbeat files on tmpfs, not the container's overlay disk, which can stall workers.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108


# As the config loads, before --preload imports the app and its metrics.
reset_metrics_directory(_settings.prometheus_multiproc_dir)
# A drain file left by this container's previous stop (a restart keeps its filesystem) would keep
# /health/routable at 503 and the container out of Traefik's rotation for good.
set_draining(False)


def when_ready(server: object) -> None:
    """On SIGTERM the master first creates the drain file, so every worker's /health/routable
    answers 503 and Traefik stops routing here while the workers close connections
    (api/shutdown.py). A
    reload (SIGHUP) or a recycled worker leaves it alone: the container keeps serving."""
    stop = signal.getsignal(signal.SIGTERM)

    def drain_then_stop(signum: int, frame: FrameType | None) -> None:
        set_draining(True)
        if callable(stop):
            stop(signum, frame)

    signal.signal(signal.SIGTERM, drain_then_stop)


# Python's recipe for pre-fork servers (gc.freeze docs): no collections in the master while the
# app is preloaded, freeze what it made before each fork, collect again in the worker. Collections
# would otherwise write to every shared object and copy the master's pages into each worker.
gc.disable()


class _Worker(Protocol):
    """What the hooks use of gunicorn.workers.base.Worker. In the master, which runs child_exit,
    pid is the forked process's int; types-gunicorn says str, the "[booting]" it is before."""

    pid: int


def pre_fork(server: object, worker: _Worker) -> None:
    gc.freeze()


def post_fork(server: object, worker: _Worker) -> None:
    gc.enable()


def child_exit(server: object, worker: _Worker) -> None:
    if _settings.prometheus_multiproc_dir:
        multiprocess.mark_process_dead(worker.pid)
