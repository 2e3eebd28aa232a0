"""The app's own request lines (ACCESS_LOG): every request, or only the problems.

The proxy logs every request; by default the app adds a line only where something went wrong
(a 5xx) or took too long, so a cached read does not pay for a log line nobody reads.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.middleware import RequestContextMiddleware
from core.logs import RequestIdFilter


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def unavailable(request: Request) -> PlainTextResponse:
    return PlainTextResponse("down", status_code=503)


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(0.6)
    return PlainTextResponse("late")


def client(**options: object) -> TestClient:
    app = Starlette(
        routes=[Route("/ok", ok), Route("/unavailable", unavailable), Route("/slow", slow)]
    )
    return TestClient(RequestContextMiddleware(app, **options))  # type: ignore[arg-type]


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[str, int, str]]:
    return [
        (r.levelname, getattr(r, "status", 0), getattr(r, "path", ""))
        for r in caplog.records
        if r.name == "api.access"
    ]


def test_problems_only_by_default(caplog):
    caplog.set_level(logging.DEBUG, logger="api.access")
    # Far apart, so a loaded machine does not make /ok count as slow.
    c = client(slow_seconds=0.5)
    for path in ("/ok", "/unavailable", "/slow", "/ok"):
        c.get(path)
    assert lines(caplog) == [("WARNING", 503, "/unavailable"), ("WARNING", 200, "/slow")]


def test_every_request_when_asked(caplog):
    caplog.set_level(logging.DEBUG, logger="api.access")
    c = client(log_every_request=True, slow_seconds=10)
    for path in ("/ok", "/unavailable", "/slow"):
        c.get(path)
    assert lines(caplog) == [
        ("INFO", 200, "/ok"),
        ("WARNING", 503, "/unavailable"),
        ("INFO", 200, "/slow"),
    ]


def test_a_problem_line_carries_the_request_id_returned(caplog):
    caplog.set_level(logging.DEBUG, logger="api.access")
    caplog.handler.addFilter(RequestIdFilter())  # as configure_logging's handler has it
    answer = client().get("/unavailable", headers={"X-Request-ID": "trace-me-42"})
    assert answer.headers["x-request-id"] == "trace-me-42"
    (record,) = [r for r in caplog.records if r.name == "api.access"]
    assert record.request_id == "trace-me-42"
