"""The api's traces: FastAPI's own OpenTelemetry tracing (a server span per request, on once
core/tracing.py sets a provider), plus a span per SQL statement, Redis command and job sent.

Polled endpoints (probes, /metrics) make no span: a trace store full of health checks hides the
requests. A traceparent the request carries is continued only with TRACING_TRUST_TRACEPARENT,
which compose sets because the api's only peer there is Traefik (whose span it then continues);
otherwise it is dropped before FastAPI reads it, and the request starts a trace of its own.

Whether a request is kept is decided at the door: by the traceparent's sampled flag, or else by
TRACING_SAMPLE_RATIO. One not kept runs with every instrumentation suppressed (spans that are
never exported would still cost their making: docs/observability.md, Sampling), under a span that
records nothing but carries its trace id into its log lines and its jobs, which are not kept either.
"""

from __future__ import annotations

import random
import re
from collections.abc import MutableMapping
from typing import Any

from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import Receive, Scope, Send

from core.error_reports import start_error_reports, stop_error_reports
from core.settings import Settings
from core.tracing import start_tracing, stop_tracing, trace_celery, trace_engine, trace_redis

UNTRACED_PATHS = frozenset({"/health", "/health/routable", "/ready", "/metrics"})
_CONTEXT_HEADERS = (b"traceparent", b"tracestate", b"baggage")
# FastAPI skips its own telemetry for a scope holding this key (a mounted app's requests):
# not even its per-request checks (a walk of the middleware stack) run.
_FASTAPI_TELEMETRY = "fastapi.telemetry"
_W3C = TraceContextTextMapPropagator()
_TRACEPARENT_00 = re.compile(rb"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
# Every instrumentation off, made once: a not-kept request attaches it (with its span) in one step.
with suppress_instrumentation():
    _SUPPRESSED = otel_context.get_current()


def _untraced(scope: MutableMapping[str, Any]) -> bool:
    return scope.get("path") in UNTRACED_PATHS


def _parent(value: bytes) -> SpanContext:
    """The caller's span from its traceparent: the common form read directly (the propagator
    costs a not-kept request more than the rest of its tracing), any other by the propagator."""
    match = _TRACEPARENT_00.fullmatch(value)
    if match is None:
        carrier = {"traceparent": value.decode("latin-1")}
        return trace.get_current_span(_W3C.extract(carrier)).get_span_context()
    trace_id, span_id, flags = (int(g, 16) for g in match.groups())
    return SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(flags))


def not_kept(headers: list[tuple[bytes, bytes]], ratio: float) -> NonRecordingSpan | None:
    """None if the request is traced; else the span it runs under: the caller's trace where its
    traceparent said not to keep it, else a new trace, not kept (the ratio's draw lost)."""
    for name, value in headers:
        if name == b"traceparent":
            parent = _parent(value)
            if parent.is_valid:
                return None if parent.trace_flags.sampled else NonRecordingSpan(parent)
    # A draw and ids as the SDK's own sampler and id generator make them: no secret in either.
    if random.random() < ratio:  # noqa: S311
        return None
    ids = SpanContext(random.getrandbits(128), random.getrandbits(64), is_remote=False)
    return NonRecordingSpan(ids)


def telemetry_config() -> TelemetryConfig:
    # No spans for FastAPI's own steps (dependencies, serialisation): the SQL and Redis spans
    # under the request's say where its time went, at less cost. No exporters of FastAPI's own.
    return {"exclude": _untraced, "operation_spans": False, "auto_configure": False}


def start(settings: Settings, engine: AsyncEngine) -> None:
    """In the lifespan, after the fork: the provider, the instrumentations, error reports."""
    start_error_reports(settings, "api")
    # The ratio was drawn at the door (KitFastAPI): every trace that reaches the SDK is kept.
    provider = start_tracing(settings, "api", new_trace_ratio=1.0)
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
    sample_ratio = 1.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.tracing and scope["type"] == "http":
            if scope["path"] in UNTRACED_PATHS:
                await self._uninstrumented(scope, receive, send, None)
                return
            headers: list[tuple[bytes, bytes]] = scope["headers"]
            if not self.trust_traceparent and any(n in _CONTEXT_HEADERS for n, _ in headers):
                scope["headers"] = [(n, v) for n, v in headers if n not in _CONTEXT_HEADERS]
            span = not_kept(scope["headers"], self.sample_ratio)
            if span is not None:
                await self._uninstrumented(scope, receive, send, span)
                return
        await super().__call__(scope, receive, send)

    async def _uninstrumented(
        self, scope: Scope, receive: Receive, send: Send, span: NonRecordingSpan | None
    ) -> None:
        """No span of FastAPI's and every instrumentation suppressed, under `span` if given."""
        scope[_FASTAPI_TELEMETRY] = None
        quiet = _SUPPRESSED if span is None else trace.set_span_in_context(span, _SUPPRESSED)
        token = otel_context.attach(quiet)
        try:
            await super().__call__(scope, receive, send)
        finally:
            scope.pop(_FASTAPI_TELEMETRY, None)
            otel_context.detach(token)
