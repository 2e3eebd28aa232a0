"""What the app answers when something fails: 422 for input it cannot store, 503 while a backing
service is down, a 500 that still carries the request id for anything else.

Classification walks the exception's chain, because SQLAlchemy wraps the driver's error and
asyncpg wraps the socket's: "the database system is shutting down" arrives as a plain DBAPIError
around asyncpg's CannotConnectNowError, and a stopped container as a socket.gaierror.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import asyncpg
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from sqlalchemy import exc as sa_exc

from api.schemas import ErrorOut
from core.error_reports import report

log = logging.getLogger(__name__)

# How long a client is asked to wait after a 503 (database or job queue down).
RETRY_AFTER_SECONDS = 5

# SQLSTATE classes that mean "not now", not "wrong request": 08 connection exception, 53
# insufficient resources (too many connections), 57P operator intervention (shutting down,
# starting up, terminated by an administrator).
_UNAVAILABLE_SQLSTATES = ("08", "53", "57P")


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        todo += [
            current.__cause__,
            current.__context__,
            orig if isinstance(orig, BaseException) else None,
        ]


def is_service_unavailable(exc: BaseException) -> bool:
    """The database (or the network to it) is down or refusing: worth a retry shortly."""
    for error in _chain(exc):
        if isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated:
            return True
        if isinstance(
            error,
            sa_exc.OperationalError
            | sa_exc.InterfaceError
            | sa_exc.DisconnectionError
            | sa_exc.TimeoutError
            | asyncpg.InterfaceError
            | asyncpg.InternalClientError
            | OSError
            | TimeoutError,
        ):
            return True
        if isinstance(error, asyncpg.PostgresError) and str(
            getattr(error, "sqlstate", "") or ""
        ).startswith(_UNAVAILABLE_SQLSTATES):
            return True
    return False


_ERRORS: dict[int, dict[str, Any]] = {
    400: {"description": "The body could not be read as JSON (not UTF-8, for one)"},
    401: {
        "description": "No bearer token, or one that is malformed, expired or not for this API",
        "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}},
    },
    403: {"description": "The token lacks the scope this operation needs"},
    404: {"description": "No such resource"},
    413: {"description": "The body is over MAX_BODY_BYTES"},
    503: {
        "description": "PostgreSQL or the job queue is unavailable: nothing was done",
        "headers": {
            "Retry-After": {"schema": {"type": "integer"}, "description": "Seconds to wait"}
        },
    },
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the errors an operation can answer, each with ErrorOut's body."""
    return {code: {"model": ErrorOut, **_ERRORS[code]} for code in codes}


def error_response(exc: Exception) -> JSONResponse:
    """The answer to an exception no route handled: 503 for an outage, else 500 (logged, and
    reported where SENTRY_DSN is set). Either way the request's span is an error, with the
    exception recorded (a no-op while tracing is off)."""
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
    if is_service_unavailable(exc):
        log.error("database unavailable", extra={"error": repr(exc)[:500]})
        return JSONResponse(
            {"detail": "the database is unavailable; try again shortly"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    log.error("unhandled exception", exc_info=exc)
    report(exc)
    return JSONResponse({"detail": "internal server error"}, status_code=500)


class AsciiJSONResponse(JSONResponse):
    """\\u-escapes what UTF-8 cannot encode, such as a lone surrogate echoed back as the invalid
    input of a 422 (the default renderer raises on it, turning a 422 into a 500)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return AsciiJSONResponse({"detail": jsonable_encoder(exc.errors())}, status_code=422)
