"""Pure ASGI middlewares (no BaseHTTPMiddleware: it buffers and costs a task per request)."""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable

from opentelemetry import trace
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import error_response
from api.metrics import observe_request
from api.shutdown import closing_connections
from core.logs import request_id_var
from core.tracing import current_ids

access_log = logging.getLogger("api.access")

# Accept a caller's id only if it is short and printable, so it cannot forge log lines. Used with
# fullmatch: a "$" anchor would let a final newline through.
_VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


class RequestContextMiddleware:
    """Request id (X-Request-ID in, or a new one; always returned), access log line, metrics;
    X-Trace-ID out while tracing is on.

    log_every_request: a line per request at INFO (ACCESS_LOG=all); otherwise only 5xx answers
    and requests slower than slow_seconds, at WARNING (the proxy logs every request by default)."""

    def __init__(
        self, app: ASGIApp, *, log_every_request: bool = False, slow_seconds: float = 1.0
    ) -> None:
        self.app = app
        self.log_every_request = log_every_request
        self.slow_seconds = slow_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = _header(scope, b"x-request-id")
        # 128 random bits as 32 hex digits, as uuid4().hex gives, without building a UUID.
        request_id = incoming if _VALID_REQUEST_ID.fullmatch(incoming) else secrets.token_hex(16)
        token = request_id_var.set(request_id)
        # Searchable in the trace store (a no-op while tracing is off).
        trace.get_current_span().set_attribute("request_id", request_id)
        status_code = 500
        started = time.perf_counter()
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                status_code = message["status"]
                response_started = True
                message.setdefault("headers", [])  # optional in ASGI
                headers = MutableHeaders(scope=message)
                # Replaces, not duplicates, one the app set (ASGI header names are lower case).
                headers["x-request-id"] = request_id
                # The trace of this request (tracing on): from a client's report to its spans.
                ids = current_ids()
                if ids is not None:
                    headers["x-trace-id"] = ids[0]
                if (
                    closing_connections.is_set()
                ):  # stopping: the client reconnects, to a server that stays
                    headers["connection"] = "close"
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if response_started:
                raise
            # Answered here, inside the request id and the access log, and the connection stays
            # usable (an exception reaching the server closes it without a response header).
            await error_response(exc)(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            method = scope["method"]
            observe_request(method, route_path, status_code, elapsed)
            if status_code >= 500 or elapsed >= self.slow_seconds:
                self._log(access_log.warning, scope, route_path, status_code, elapsed)
            elif self.log_every_request:
                # Probes poll these every few seconds: log them only when they fail.
                probe = route_path in ("/health", "/health/routable") and status_code == 200
                log = access_log.debug if probe else access_log.info
                self._log(log, scope, route_path, status_code, elapsed)
            request_id_var.reset(token)

    @staticmethod
    def _log(
        log: Callable[..., None], scope: Scope, route: str, status_code: int, elapsed: float
    ) -> None:
        client = scope.get("client")
        log(
            "request",
            extra={
                "method": scope["method"],
                "path": scope["path"],
                "route": route,
                "status": status_code,
                "duration_ms": round(elapsed * 1000, 2),
                "client": client[0] if client else None,
                "scheme": scope.get("scheme"),
            },
        )


def _header(scope: Scope, name: bytes) -> str:
    """One request header's value ("" if absent): a scan of the raw list, no Headers object."""
    headers: list[tuple[bytes, bytes]] = scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return ""


class _BodyTooLarge(HTTPException):
    """An HTTPException, so FastAPI's body parsing re-raises it as a 413 instead of a 400."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {max_bytes} bytes")


class BodySizeLimitMiddleware:
    """413 for a body over the limit: by Content-Length at once, or while a chunked body streams."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Connection: close, as the rest of the body is never read.
        response = JSONResponse(
            {"detail": _BodyTooLarge(self.max_bytes).detail},
            status_code=413,
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Stripped: httptools passes "5000 " on as it came. isdecimal, not isdigit: of the
        # latin-1 characters a header decodes to, only 0-9 pass it. The body is counted below
        # whatever the header says: not every server frames it by Content-Length (Mangum).
        declared = _header(scope, b"content-length").strip(" \t")
        if declared.isdecimal() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return

        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge(self.max_bytes)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not response_started:
                await self._reject(scope, receive, send)
