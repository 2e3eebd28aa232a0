"""Stopping without dropping requests.

A keep-alive connection closed while idle can still lose a request: the client may have sent one
that sits unread in the socket when the server closes it, and gets a reset. So on SIGTERM (a
`docker stop`, a deploy, a gunicorn reload or a recycle after GUNICORN_MAX_REQUESTS) a worker
first drains for GUNICORN_DRAIN_SECONDS: it keeps accepting and answering, but every response says
`Connection: close`, so each busy client is told to reconnect before the connection goes away.
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

# After the drain, how long a worker that no longer accepts keeps serving what it has accepted.
QUIET_SECONDS = 1.0

# Set in a worker process while it drains; read on every response (api/middleware.py).
draining = threading.Event()


class DrainingServer(Server):
    def __init__(self, config: Config, drain_seconds: float) -> None:
        super().__init__(config)
        self.drain_seconds = drain_seconds
        self._drain_until: float | None = None
        self._drain_signal: int | None = None
        self._quiet_until: float | None = None

    def _begin_drain(self, reason: str) -> float:
        """Returns the time (time.monotonic) the drain ends."""
        self._drain_until = time.monotonic() + self.drain_seconds
        draining.set()
        log.info(
            "draining before shutdown", extra={"reason": reason, "seconds": self.drain_seconds}
        )
        return self._drain_until

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_until is not None or self.drain_seconds <= 0:
            super().handle_exit(sig, frame)  # a second signal, or no drain: stop now
            return
        self._drain_signal = sig
        self._begin_drain(f"signal {sig}")

    async def on_tick(self, counter: int) -> bool:
        stop = await super().on_tick(counter)  # should_exit, or GUNICORN_MAX_REQUESTS reached
        if self.should_exit:
            return True
        drain_until = self._drain_until
        if drain_until is None:
            if not stop or self.drain_seconds <= 0:
                return stop
            drain_until = self._begin_drain("request limit")
        if time.monotonic() < drain_until:
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
        if self._drain_signal is not None:
            # Recorded now, so uvicorn re-raises it after its shutdown, as without a drain.
            super().handle_exit(self._drain_signal, None)
        return True


class DrainingUvicornWorker(UvicornWorker):
    """uvicorn_worker's UvicornWorker, serving through DrainingServer."""

    # Forwarded headers are the app's job (api/forwarded.py): it knows the proxy by name.
    # An instance attribute to uvicorn_worker's types, so not a ClassVar (mypy refuses one).
    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012
        **UvicornWorker.CONFIG_KWARGS,
        "proxy_headers": False,
    }

    async def _serve(self) -> None:
        self.config.app = self.wsgi
        server = DrainingServer(self.config, get_settings().gunicorn_drain_seconds)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
