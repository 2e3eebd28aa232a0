"""Stopping without dropping requests.

A keep-alive connection closed while idle can still lose a request: the client may have sent one
that sits unread in the socket when the server closes it, and gets a reset. So on SIGTERM (a
`docker stop`, a deploy, a gunicorn reload or a recycle after GUNICORN_MAX_REQUESTS) a worker
first closes its connections for GUNICORN_DRAIN_SECONDS: it keeps accepting and answering, but
every response says `Connection: close`, so each busy client is told to reconnect before the
connection goes away.
Then it stops accepting, answers what it already accepted for a second, and only then does
uvicorn's own graceful shutdown run (in-flight requests finish, idle connections
close). Meanwhile the gunicorn master's drain file makes /health/routable answer 503, so Traefik
routes new requests elsewhere (api/gunicorn_conf.py).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from types import FrameType
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.config import Config
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from core.settings import get_settings

log = logging.getLogger(__name__)

# After closing connections, how long a worker that no longer accepts serves what it accepted.
QUIET_SECONDS = 1.0

# Set in a worker process while it closes connections; read on every response (api/middleware.py).
closing_connections = threading.Event()


class GracefulServer(Server):
    def __init__(self, config: Config, close_seconds: float) -> None:
        super().__init__(config)
        self.close_seconds = close_seconds
        self._closing_until: float | None = None
        self._stop_signal: int | None = None
        self._quiet_until: float | None = None

    def _begin_closing(self, reason: str) -> float:
        """Returns the time (time.monotonic) the closing ends."""
        self._closing_until = time.monotonic() + self.close_seconds
        closing_connections.set()
        log.info(
            "closing connections before shutdown",
            extra={"reason": reason, "seconds": self.close_seconds},
        )
        return self._closing_until

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._closing_until is not None or self.close_seconds <= 0:
            super().handle_exit(sig, frame)  # a second signal, or no closing: stop now
            return
        self._stop_signal = sig
        self._begin_closing(f"signal {sig}")

    async def on_tick(self, counter: int) -> bool:
        stop = await super().on_tick(counter)  # should_exit, or GUNICORN_MAX_REQUESTS reached
        if self.should_exit:
            return True
        closing_until = self._closing_until
        if closing_until is None:
            if not stop or self.close_seconds <= 0:
                return stop
            closing_until = self._begin_closing("request limit")
        if time.monotonic() < closing_until:
            return False
        if self._quiet_until is None:
            # Stop accepting first, and keep answering a moment longer: a connection accepted
            # just now has a request on its way, which uvicorn's shutdown would take for an idle
            # connection and reset. Other workers, or the proxy's other replicas, take new ones.
            for server in self.servers:
                server.close()
            self._quiet_until = time.monotonic() + QUIET_SECONDS
        if time.monotonic() < self._quiet_until:
            return False
        if self._stop_signal is not None:
            # Recorded now, so uvicorn re-raises it after its shutdown, as without closing first.
            super().handle_exit(self._stop_signal, None)
        return True


class GracefulUvicornWorker(UvicornWorker):
    """uvicorn_worker's UvicornWorker, serving through GracefulServer."""

    # Forwarded headers are the app's job (api/forwarded.py): it knows the proxy by name.
    # An instance attribute to uvicorn_worker's types, so not a ClassVar (mypy refuses one).
    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012
        **UvicornWorker.CONFIG_KWARGS,
        "proxy_headers": False,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = GracefulServer(self.config, get_settings().gunicorn_drain_seconds)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
