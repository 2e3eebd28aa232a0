"""The app in a process of its own, for tests/unit/test_tracing.py: a tracer provider is set once
per process, so each setup gets a fresh one. The settings come from the environment the test
gives; requests go through the app in-process (no server); prints one JSON line per response,
after the app's own JSON log lines.

python -m tests.unit.tracing_probe PATH[|TRACEPARENT] ...
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx


async def main(requests: list[str]) -> None:
    from api.main import create_app
    from core.settings import Settings

    app = create_app(Settings())

    @app.get("/boom")
    async def boom() -> None:
        # A credential in the message: the report must not carry it.
        raise RuntimeError("cannot reach postgresql://app:hunter2@db:5432/app")

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for request in requests:
                path, _, traceparent = request.partition("|")
                headers = {
                    "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl",
                    "Cookie": "session=s3cret",
                    "X-Request-ID": f"probe-{len(path)}",
                }
                if traceparent:
                    headers["traceparent"] = traceparent
                response = await client.get(path, headers=headers)
                print(
                    json.dumps(
                        {
                            "probe": path,
                            "status": response.status_code,
                            "request_id": response.headers.get("x-request-id"),
                            "trace_id": response.headers.get("x-trace-id"),
                        }
                    ),
                    flush=True,
                )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
