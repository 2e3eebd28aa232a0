"""Operations: liveness, readiness, metrics, and what the app sees of a request behind the proxy."""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from api import metrics, readiness
from api.deps import SettingsDep, engine_of, redis_of, settings_of
from core.logs import request_id_var

router = APIRouter(tags=["operations"])
log = logging.getLogger(__name__)


@router.get("/health")
async def health() -> JSONResponse:
    """Liveness: the process answers. No I/O, so a slow database never restarts the api."""
    return JSONResponse({"status": "ok"})


@router.get("/health/routable", responses={503: {"description": "Draining before a stop"}})
async def routable(request: Request) -> JSONResponse:
    """For the probes (Traefik's active check, the container HEALTHCHECK): 503 while draining, so
    traffic moves away before a deploy stops this container. Users' requests, /health included,
    are still answered normally meanwhile."""
    if os.path.exists(settings_of(request).drain_file):  # noqa: ASYNC240 - one stat()
        return JSONResponse({"status": "draining"}, status_code=503)
    return JSONResponse({"status": "ok"})


@router.get("/ready", responses={503: {"description": "A dependency failed; named in checks"}})
async def ready(request: Request) -> JSONResponse:
    """Readiness: database and Redis reachable, schema migrated to this code's head, WAL
    archiving not failing for longer than ARCHIVE_STALL_SECONDS.

    Why a check failed is logged. In production the answer says only which failed: it is public
    (deploy checks it through the proxy), and an error's text tells an attacker about the servers
    behind (host names, addresses, versions)."""
    settings = settings_of(request)
    problems = await readiness.problems(engine_of(request), redis_of(request), settings)
    failed = [name for name, problem in problems.items() if problem is not None]
    for name in failed:
        log.warning("readiness check failed", extra={"check": name, "error": problems[name]})
    if settings.environment == "production":
        checks = {name: "failed" if name in failed else "ok" for name in problems}
    else:
        checks = {name: problem or "ok" for name, problem in problems.items()}
    body = {"status": "not ready" if failed else "ready", "failed": failed, "checks": checks}
    return JSONResponse(body, status_code=503 if failed else 200)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(settings: SettingsDep) -> Response:
    payload, content_type = metrics.render(settings.prometheus_multiproc_dir)
    return Response(payload, media_type=content_type)


@router.get("/whoami")
async def whoami(request: Request) -> dict[str, Any]:
    """The client address and scheme as the app sees them: proves forwarded headers are trusted
    from the proxy only (https here behind Traefik, the real client, never a spoofed one)."""
    return {
        "client": request.client.host if request.client else None,
        "scheme": request.url.scheme,
        "host": request.url.hostname,
        "request_id": request_id_var.get(),
        "served_by": socket.gethostname(),
    }
