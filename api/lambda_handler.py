"""AWS Lambda: `api.lambda_handler.handler` serves the same FastAPI app through Mangum, from the
image's `lambda` target (Dockerfile), for API Gateway HTTP APIs (v2 events) and REST APIs (v1).

The app's lifespan (database engine, Redis client, job queue client) runs once per execution
environment, at init, on one event loop that Mangum then uses for every invocation, so those are
made once and reused; Mangum's own lifespan support would make and close them on each invocation.
Between invocations Lambda freezes the environment: the lambda image sets DB_POOL_MODE=per-request
(a connection per request, none kept across a freeze); with RDS Proxy in front of PostgreSQL,
DB_POOL_MODE=pooled is safe and saves the connection set-up.

An event that is not an HTTP request Mangum understands gets a 400 answer naming the problem,
rather than an error that Lambda reports as a failed invocation and retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from contextlib import AsyncExitStack
from typing import Any

from mangum import Mangum

from api.main import app

log = logging.getLogger("api.lambda")

_loop = asyncio.new_event_loop()
asyncio.set_event_loop(_loop)
_environment = AsyncExitStack()
_loop.run_until_complete(_environment.enter_async_context(app.router.lifespan_context(app)))
_adapter = Mangum(app, lifespan="off")


def _bad_event(reason: str) -> dict[str, Any]:
    return {
        "statusCode": 400,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"detail": f"not an API Gateway HTTP event: {reason}"}),
        "isBase64Encoded": False,
    }


def handler(event: Any, context: Any) -> dict[str, Any]:
    if not isinstance(event, dict):
        return _bad_event(f"the event is a {type(event).__name__}, not an object")
    try:
        # Which kind of event, and the request it describes: a malformed one fails here, before
        # the app sees anything.
        _ = _adapter.infer(event, context).scope
    except (RuntimeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        log.warning("bad event", extra={"error": repr(exc)})
        return _bad_event(type(exc).__name__ if not isinstance(exc, RuntimeError) else "unknown")
    response: dict[str, Any] = _adapter(event, context)
    return response
