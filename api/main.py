"""The FastAPI application. `api.main:app` is what gunicorn serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from api.cache import ItemCache
from api.cache_debts import CacheDebts
from api.engine import make_async_engine
from api.errors import validation_error
from api.forwarded import ForwardedHeadersMiddleware
from api.job_queue import JobQueue
from api.middleware import BodySizeLimitMiddleware, RequestContextMiddleware
from api.pool_queue import make_pool_queue
from api.routes import items, jobs, ops
from api.tracing import KitFastAPI, telemetry_config
from api.tracing import start as start_tracing
from api.tracing import stop as stop_tracing
from core.logs import configure_logging
from core.settings import Settings, get_settings
from core.startup_gc import freeze_startup_objects
from core.tracing import tracing_on


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Made here, per worker process, never at import: safe with gunicorn --preload.
    settings: Settings = app.state.settings
    engine = make_async_engine(settings)
    # Before any connection: the engine's statements and the clients' commands are traced.
    start_tracing(settings, engine)
    debts = CacheDebts(engine, ItemCache.key)
    redis = Redis.from_url(
        settings.redis_connection_url,
        socket_timeout=settings.redis_socket_timeout,
        socket_connect_timeout=settings.redis_socket_timeout,
        health_check_interval=30,
        # A connection the server closed (Redis restarted) is retried on a fresh one, quickly:
        # once (a Redis that is really down is then skipped until a probe finds it: api/cache.py).
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.05), retries=1),
        retry_on_error=[RedisConnectionError],
        # Every new connection deletes the cached copies of writes made while Redis was away.
        redis_connect_func=debts.pay,
    )
    app.state.engine = engine
    app.state.pool_queue = make_pool_queue(engine, settings)
    app.state.redis = redis
    app.state.cache = ItemCache(
        redis, settings.cache_ttl_seconds, settings.cache_retry_after_seconds, debts
    )
    # A client only: it sends jobs and never loads the worker's task code; made on first use.
    app.state.job_queue = JobQueue(settings)
    freeze_startup_objects()
    try:
        yield
    finally:
        app.state.job_queue.close()
        await app.state.cache.close()
        await redis.aclose()
        await engine.dispose()
        stop_tracing()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.require_secrets("postgres_password", "redis_password", "jwt_secret")
    configure_logging(settings.log_level)
    app = KitFastAPI(
        title=settings.app_name,
        lifespan=lifespan,
        docs_url="/docs" if settings.environment != "production" else None,
        redoc_url=None,
        telemetry=telemetry_config(),
    )
    app.tracing = tracing_on(settings)
    app.trust_traceparent = settings.tracing_trust_traceparent
    app.sample_ratio = settings.tracing_sample_ratio
    app.state.settings = settings
    # A 503 for a database outage and a 500 for anything else are answered by
    # RequestContextMiddleware, so both carry the request id (api/errors.py).
    app.add_exception_handler(RequestValidationError, validation_error)
    app.include_router(ops.router)
    app.include_router(items.router)
    app.include_router(jobs.router)
    # Outermost first: every response, a 413 included, gets a request id and a log line.
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(
        RequestContextMiddleware,
        log_every_request=settings.access_log == "all",
        slow_seconds=settings.slow_request_seconds,
    )
    if settings.cors_allow_origins:
        # Outside the app's own layers, so a 413, 500 or 503 carries the CORS headers too and the
        # front end can read it; a preflight is answered here, before the request id.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=settings.cors_allow_methods,
            allow_headers=settings.cors_allow_headers,
            expose_headers=settings.cors_expose_headers,
            allow_credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age,
        )
    # Outside even the request id: every layer sees the client the proxy saw (api/forwarded.py).
    app.add_middleware(
        ForwardedHeadersMiddleware,
        allow_ips=settings.forwarded_allow_ips,
        allow_names=settings.forwarded_allow_names,
    )
    return app


app = create_app()
