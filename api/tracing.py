"""The api's traces: FastAPI's own OpenTelemetry tracing (a server span per request, on once
core/tracing.py sets a provider), plus a span per SQL statement, Redis command and job sent.

Polled endpoints (probes, /metrics) make no span: a trace store full of health checks hides the
requests. A traceparent the request carries is continued only with TRACING_TRUST_TRACEPARENT,
which compose sets because the api's only peer there is Traefik (whose span it then continues);
otherwise it is dropped before FastAPI reads it, and the request starts a trace of its own.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry.instrumentation.utils import suppress_instrumentation
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from core.error_reports import start_error_reports, stop_error_reports
from core.settings import Settings
from core.tracing import start_tracing, stop_tracing, trace_celery, trace_engine, trace_redis

UNTRACED_PATHS = frozenset({"/health", "/health/routable", "/ready", "/metrics"})
_CONTEXT_HEADERS = (b"traceparent", b"tracestate", b"baggage")


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED_PATHS


def telemetry_config() -> TelemetryConfig:
    # No spans for FastAPI's own steps (dependencies, serialisation): the SQL and Redis spans
    # under the request's say where its time went, at less cost. No exporters of FastAPI's own.
    return {"exclude": _untraced, "operation_spans": False, "auto_configure": False}


def start(settings: Settings, engine: AsyncEngine) -> None:
    """In the lifespan, after the fork: the provider, the instrumentations, error reports."""
    start_error_reports(settings, "api")
    provider = start_tracing(settings, "api")
    if provider is None:
        return
    trace_engine(engine.sync_engine, provider)
    trace_redis(provider)
    trace_celery(provider)


def stop() -> None:
    stop_tracing()
    stop_error_reports()


class KitFastAPI(FastAPI):
    """FastAPI that, while tracing is on, traces nothing for the polled paths (their SQL and
    Redis commands included) and can refuse a caller's trace context before FastAPI reads it."""

    tracing = False
    trust_traceparent = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tracing and scope["type"] == "http":
            if scope["path"] in UNTRACED_PATHS:
                with suppress_instrumentation():
                    await super().__call__(scope, receive, send)
                return
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            if not self.trust_traceparent and any(n in _CONTEXT_HEADERS for n, _ in headers):
                scope["headers"] = [(n, v) for n, v in headers if n not in _CONTEXT_HEADERS]
        await super().__call__(scope, receive, send)
