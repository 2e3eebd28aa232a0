"""Steady, bounded HTTP load on the running stack, recorded request by request, so a fault test
can count what failed, how, and for how long.

Runs in a thread with its own event loop while the test breaks something. Every request is
recorded with when it was sent and how it ended:
- a status code (with whether X-Request-ID and Retry-After came back);
- "refused": the connection could not be opened (nothing was sent; the server is gone, or its
  container and its address with it, so the connect times out);
- "lost": the request was sent and the connection broke before a response (the failure a
  user sees as a reset, and what a graceful stop must never cause);
- "timeout": no answer within the client's timeout.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx


class Request(NamedTuple):
    method: str
    path: str
    body: dict[str, Any] | None = None
    headers: dict[str, str] = {}  # noqa: RUF012 - never mutated
    # A slow client: the JSON body is sent in pieces over this many seconds.
    upload_seconds: float = 0.0


@dataclass(frozen=True)
class Outcome:
    method: str
    path: str
    sent: float
    took: float
    kind: str  # "200".."599", "refused", "lost", "timeout"
    request_id: bool = False
    retry_after: bool = False

    @property
    def ok(self) -> bool:
        return self.kind.isdigit() and int(self.kind) < 400

    @property
    def failed(self) -> bool:
        return not self.ok


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def between(self, start: float, end: float = float("inf")) -> list[Outcome]:
        return [o for o in self.outcomes if start <= o.sent < end]

    def kinds(self, outcomes: list[Outcome] | None = None) -> Counter[str]:
        return Counter(o.kind for o in (self.outcomes if outcomes is None else outcomes))

    def failures(self, outcomes: list[Outcome] | None = None) -> list[Outcome]:
        return [o for o in (self.outcomes if outcomes is None else outcomes) if o.failed]

    def recovered_after(self, fault: float) -> float:
        """Seconds from the fault until the last failure that followed it ended (0: none)."""
        ends = [o.sent + o.took for o in self.failures(self.between(fault))]
        return max(ends) - fault if ends else 0.0

    @staticmethod
    def p99(outcomes: list[Outcome]) -> float:
        took = sorted(o.took for o in outcomes)
        if len(took) < 2:
            return took[0] if took else 0.0
        return statistics.quantiles(took, n=100, method="inclusive")[98]

    def summary(self, fault: float | None = None) -> str:
        text = f"{len(self.outcomes)} requests: {dict(self.kinds())}"
        if fault is not None:
            text += f"; after the fault {dict(self.kinds(self.between(fault)))}"
            text += f"; recovered {self.recovered_after(fault):.2f}s after it"
        return text


class _Load:
    def __init__(
        self,
        base_url: str,
        requests: Callable[[int], Iterator[Request]],
        connections: int,
        rate: float | None,
        headers: dict[str, str],
        timeout: float,
        sni_hostname: str | None = None,
    ) -> None:
        self.base_url = base_url
        # TLS's server name, where base_url names an address (a proxy that refuses unknown names).
        self.extensions = {"sni_hostname": sni_hostname} if sni_hostname else {}
        self.requests = requests
        self.connections = connections
        self.rate = rate
        self.headers = headers
        self.timeout = timeout
        self.result = LoadResult()
        self._stop = threading.Event()

    async def _client(self, index: int, client: httpx.AsyncClient) -> None:
        interval = self.connections / self.rate if self.rate else 0.0
        next_at = time.monotonic() + (interval * index / self.connections)
        for method, path, body, extra, upload_seconds in self.requests(index):
            if self._stop.is_set():
                return
            if interval:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
            sent = time.monotonic()
            try:
                if upload_seconds:
                    r = await client.request(
                        method,
                        path,
                        content=_trickle(json.dumps(body).encode(), upload_seconds),
                        headers={**extra, "Content-Type": "application/json"},
                        extensions=self.extensions,
                    )
                else:
                    r = await client.request(
                        method, path, json=body, headers=extra, extensions=self.extensions
                    )
                kind = str(r.status_code)
                rid, retry = "x-request-id" in r.headers, "retry-after" in r.headers
            except (httpx.ConnectError, httpx.ConnectTimeout):
                kind, rid, retry = "refused", False, False
            except httpx.TimeoutException:
                kind, rid, retry = "timeout", False, False
            except httpx.TransportError:
                kind, rid, retry = "lost", False, False
            took = time.monotonic() - sent
            self.result.outcomes.append(
                Outcome(method, path, sent, took, kind, request_id=rid, retry_after=retry)
            )
            if kind == "refused":
                await asyncio.sleep(0.05)  # the server is gone: do not spin

    async def _run(self, deadline: float) -> None:
        async def client_task(index: int) -> None:
            # One connection per client, kept alive, as a browser or an SDK would.
            limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
            async with httpx.AsyncClient(
                base_url=self.base_url,
                headers=self.headers,
                timeout=self.timeout,
                verify=False,
                limits=limits,
            ) as client:
                await self._client(index, client)

        async def stopper() -> None:
            # A threading.Event: set from the test thread, so polled here.
            while not self._stop.is_set() and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            self._stop.set()

        await asyncio.gather(stopper(), *(client_task(i) for i in range(self.connections)))

    def stop(self) -> None:
        self._stop.set()


@contextmanager
def steady_load(
    base_url: str,
    requests: Callable[[int], Iterator[Request]],
    *,
    connections: int = 32,
    rate: float | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10.0,
    max_seconds: float = 120.0,
    sni_hostname: str | None = None,
) -> Iterator[LoadResult]:
    """Load from a background thread until the block ends (or max_seconds: bounded always).
    `requests(i)` yields client i's requests; `rate` caps the total requests a second;
    `sni_hostname` names the server in TLS where base_url holds an address."""
    load = _Load(base_url, requests, connections, rate, headers or {}, timeout, sni_hostname)
    thread = threading.Thread(
        target=asyncio.run, args=(load._run(time.monotonic() + max_seconds),), daemon=True
    )
    thread.start()
    try:
        yield load.result
    finally:
        load.stop()
        thread.join(timeout + 5)


def cycle(*requests: Request) -> Callable[[int], Iterator[Request]]:
    """Every client sends the same requests in turn, each starting at its own offset."""

    def per_client(index: int) -> Iterator[Request]:
        items = list(requests)
        offset = index % len(items)
        return itertools.cycle(items[offset:] + items[:offset])

    return per_client


async def _trickle(data: bytes, seconds: float, pieces: int = 5) -> AsyncIterator[bytes]:
    step = max(1, len(data) // pieces)
    for start in range(0, len(data), step):
        if start:
            await asyncio.sleep(seconds / pieces)
        yield data[start : start + step]


def get(path: str, **headers: str) -> Request:
    return Request("GET", path, None, headers)


def slow_post(path: str, body: dict[str, Any], seconds: float, **headers: str) -> Request:
    """A POST whose body takes `seconds` to arrive: a request in flight for that long."""
    return Request("POST", path, body, headers, seconds)


def post(path: str, body: dict[str, Any], **headers: str) -> Request:
    return Request("POST", path, body, headers)
