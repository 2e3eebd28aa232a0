"""OpenTelemetry traces for the api and the worker, from the settings: one tracer provider per
process, made after the fork (a BatchSpanProcessor's export thread does not survive one).

Off (OTEL_EXPORTER_OTLP_ENDPOINT unset): nothing here runs, the SDK is not even imported, and
FastAPI's own tracing stays off, since it only traces once a provider is set. On: spans go over
OTLP/HTTP (protobuf) to the endpoint's /v1/traces, a new trace kept with TRACING_SAMPLE_RATIO and
a continued one as its parent chose (the W3C traceparent from Traefik, or a Celery message).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from core.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger(__name__)

_provider: TracerProvider | None = None


def tracing_on(settings: Settings) -> bool:
    return settings.otel_exporter_otlp_endpoint is not None


def start_tracing(
    settings: Settings, service: str, new_trace_ratio: float | None = None
) -> TracerProvider | None:
    """The process's provider, made on the first call (None while tracing is off). A new trace is
    kept with new_trace_ratio (None: TRACING_SAMPLE_RATIO), a continued one as its parent was."""
    global _provider
    if not tracing_on(settings):
        return None
    if _provider is not None:
        return _provider
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    assert settings.otel_exporter_otlp_endpoint is not None
    resource = Resource.create(
        {
            "service.name": service,
            "service.namespace": settings.app_name,
            "service.version": settings.release,
            "deployment.environment.name": settings.environment,
        }
    )
    ratio = settings.tracing_sample_ratio if new_trace_ratio is None else new_trace_ratio
    provider = TracerProvider(resource=resource, sampler=sampler(ratio))
    exporter = OTLPSpanExporter(
        endpoint=settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces",
        headers=settings.otlp_headers or {},
        timeout=5,
    )
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    log.info(
        "tracing on",
        extra={
            "endpoint": settings.otel_exporter_otlp_endpoint,
            "sample_ratio": settings.tracing_sample_ratio,
        },
    )
    return provider


def sampler(ratio: float) -> Any:
    """Parent-based ratio: a root span is kept with `ratio`, a child as its parent was."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    return ParentBased(TraceIdRatioBased(ratio))


def stop_tracing() -> None:
    """Sends what is still buffered (a stopping process), then stops the export thread."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
        _provider = None


def trace_engine(engine: Any, provider: TracerProvider) -> None:
    """A span per statement of this SQLAlchemy (sync) engine. The instrumentor's version check
    refuses SQLAlchemy 2.1, whose engine events it uses are unchanged: skipped."""
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

    instrumentor = SQLAlchemyInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        # One engine per process in the kit; a second (tests) stays untraced.
        return
    instrumentor.instrument(engine=engine, tracer_provider=provider, skip_dep_check=True)


def trace_celery(provider: TracerProvider) -> None:
    """A span per job sent (its traceparent in the message's headers) and per job run."""
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    instrumentor = CeleryInstrumentor()  # type: ignore[no-untyped-call]
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def trace_redis(provider: TracerProvider) -> None:
    """A span per Redis command of this process's clients."""
    from opentelemetry.instrumentation.redis import RedisInstrumentor

    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)


def current_ids() -> tuple[str, str] | None:
    """The current span's trace id and span id in hex, as Jaeger and Traefik's log print them."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def traceparent() -> str | None:
    """The current span as a W3C traceparent (None while tracing is off), to store with a job."""
    from opentelemetry.propagate import inject

    carrier: dict[str, str] = {}
    if current_ids() is not None:
        inject(carrier)
    return carrier.get("traceparent")
