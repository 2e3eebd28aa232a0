"""X-Forwarded-For and X-Forwarded-Proto, believed from the proxy alone.

The proxy has no fixed address: Docker picks the edge network's subnet, so the kit never collides
with another network on the engine. It is known by name instead (FORWARDED_ALLOW_NAMES: `proxy`
in compose, `tasks.proxy` on Swarm), looked up in Docker's DNS when a request comes from an
address not yet trusted, at most once a second, so a recreated proxy is trusted at its new
address and nobody else ever is. FORWARDED_ALLOW_IPS are trusted as they are. The headers are
applied by uvicorn's own ProxyHeadersMiddleware, rebuilt whenever the trusted set changes.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

log = logging.getLogger(__name__)

# Addresses of one name (none: it does not exist now), or an OSError (no answer: ask again).
Lookup = Callable[[str], Awaitable[Iterable[str]]]
LOOKUP_INTERVAL_SECONDS = 1.0
LOOKUP_TIMEOUT_SECONDS = 1.0
_NOT_FOUND = {socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)}


async def docker_dns_lookup(name: str) -> set[str]:
    """The name's current addresses in Docker's embedded DNS. Asked as an absolute name, so no
    search domain of the host's (`proxy.corp.example`) can answer while the proxy is away."""
    absolute = name.rstrip(".") + "."
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(absolute, None, type=socket.SOCK_STREAM), LOOKUP_TIMEOUT_SECONDS
        )
    except socket.gaierror as error:
        if error.errno in _NOT_FOUND:
            return set()
        raise
    return {str(info[4][0]) for info in infos}


def _entries(csv: str) -> list[str]:
    return [entry.strip() for entry in csv.split(",") if entry.strip()]


class ForwardedHeadersMiddleware:
    """Outermost: every later layer (logs, rate of requests by client) sees the real client."""

    def __init__(
        self,
        app: ASGIApp,
        allow_ips: str,
        allow_names: str = "",
        lookup: Lookup = docker_dns_lookup,
    ) -> None:
        self.app = app
        self._static = _entries(allow_ips)
        self._names = _entries(allow_names)
        self._lookup = lookup
        self._resolved: frozenset[str] = frozenset()
        self._next_lookup = 0.0
        self._pending: asyncio.Task[None] | None = None
        self._trust(self._static)

    def _trust(self, hosts: list[str]) -> None:
        middleware = ProxyHeadersMiddleware(cast(Any, self.app), trusted_hosts=hosts)
        # uvicorn's own matcher (networks, IPv6 spellings); its ASGI types are narrower.
        self._trusted = middleware.trusted_hosts
        self._trusting = cast(ASGIApp, middleware)

    @property
    def resolved(self) -> frozenset[str]:
        """The names' addresses as last looked up."""
        return self._resolved

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._names and scope["type"] in ("http", "websocket"):
            client = scope.get("client")
            if client and client[0] not in self._trusted:
                await self._refresh()
        await self._trusting(scope, receive, send)

    async def _refresh(self) -> None:
        """One lookup at a time, at most one a second; callers meanwhile wait for it."""
        if self._pending is None:
            if time.monotonic() < self._next_lookup:
                return
            self._next_lookup = time.monotonic() + LOOKUP_INTERVAL_SECONDS
            self._pending = asyncio.ensure_future(self._look_up())
        pending = self._pending
        try:
            await asyncio.shield(pending)
        finally:
            if pending.done():
                self._pending = None

    async def _look_up(self) -> None:
        found: set[str] = set()
        for name in self._names:
            try:
                found.update(await self._lookup(name))
            except (OSError, ValueError) as error:
                # No answer: kept as it was. A name that does not exist is an answer (none).
                log.warning(
                    "trusted proxy name not found", extra={"proxy_name": name, "error": str(error)}
                )
                return
        if found != self._resolved:
            log.info("trusted proxy addresses", extra={"addresses": sorted(found)})
            self._resolved = frozenset(found)
            self._trust([*self._static, *sorted(found)])
