"""Azure Functions: function_app.py driven in-process as the Python worker drives it, with
azure-functions' own HttpRequest and HttpResponse, one event loop for every invocation, on the
test stack's real PostgreSQL and Redis, a job run by the stack's worker.

The Functions host itself (Core Tools) downloads its binary and is not run here; what it adds is
routing by host.json, whose empty route prefix tests/static/test_platform_files.py checks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import azure.functions as func
import pytest

import function_app
from tests.support.azure import http_function
from tests.support.jobs import poll_job

HOST = "https://kit-api.azurewebsites.net"


class Invoke:
    """The app's one function, called as the worker calls it; counts the app's lifespans."""

    def __init__(self) -> None:
        self.function = http_function().get_user_function()
        self.lifespan: list[str] = []
        self.real = real = function_app.api.router.lifespan_context

        @asynccontextmanager
        async def counted(app: Any) -> AsyncIterator[Any]:
            self.lifespan.append("startup")
            async with real(app) as state:
                yield state
            self.lifespan.append("shutdown")

        function_app.api.router.lifespan_context = counted

    async def __call__(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> func.HttpResponse:
        url, _, query = f"{HOST}{path}".partition("?")
        request = func.HttpRequest(
            method,
            f"{url}?{query}" if query else url,
            headers=(headers or {}) | ({"content-type": "application/json"} if body else {}),
            params=dict(pair.split("=", 1) for pair in query.split("&") if pair),
            route_params={"route": path.lstrip("/").partition("?")[0]},
            body=json.dumps(body).encode() if body is not None else b"",
        )
        return await self.function(request, None)

    def json(self, response: func.HttpResponse) -> Any:
        return json.loads(response.get_body())


@pytest.fixture(scope="module")
async def invoke(stack) -> AsyncIterator[Invoke]:
    calls = Invoke()
    yield calls
    if function_app.app.startup_task_done:  # a test run alone: shut down here, in this loop
        await function_app.app.middleware.notify_shutdown()
        function_app.app.startup_task_done = False
    function_app.api.router.lifespan_context = calls.real


async def test_items_a_job_and_error_answers_on_the_real_stack(invoke, auth):
    created = await invoke("POST", "/items", {"name": "from azure"}, auth)
    assert created.status_code == 201, created.get_body()
    location = created.headers["location"]
    item = await invoke("GET", location)
    assert (item.status_code, invoke.json(item)["name"]) == (200, "from azure")
    page = await invoke("GET", "/items?limit=1")
    assert page.status_code == 200 and len(invoke.json(page)["items"]) == 1
    # Error answers are the app's own, with their bodies and headers.
    invalid = await invoke("POST", "/items", {"name": ""}, auth)
    assert invalid.status_code == 422, invalid.get_body()
    unauthorized = await invoke("POST", "/items", {"name": "no token"})
    assert unauthorized.status_code == 401
    assert unauthorized.headers["www-authenticate"].startswith("Bearer")
    missing = await invoke("GET", "/items/999999999")
    assert missing.status_code == 404
    assert missing.headers["x-request-id"], "through the app's middleware"
    # A job queued from the function, run by the stack's worker.
    queued = await invoke("POST", "/jobs", {"cost": 1000, "seed": "azure"}, auth)
    assert queued.status_code == 202, queued.get_body()
    loop = asyncio.get_running_loop()

    def get_job() -> dict[str, Any]:
        # Each poll on this loop, the function's, as every invocation of an instance is.
        poll = asyncio.run_coroutine_threadsafe(invoke("GET", queued.headers["location"]), loop)
        return invoke.json(poll.result())

    job = await asyncio.to_thread(poll_job, get_job, within=60, every=0.25)
    assert job["state"] == "succeeded" and job["result"]


async def test_the_lifespan_runs_once_and_shuts_down_in_the_same_loop(invoke):
    for _ in range(3):
        ready = await invoke("GET", "/ready")
        assert ready.status_code == 200, ready.get_body()
    assert invoke.lifespan == ["startup"], "once per instance, not per invocation"
    # What the instance's end runs; AsgiFunctionApp.__del__ would start another loop, where the
    # lifespan's queue and the engine's connections are not.
    await function_app.app.middleware.notify_shutdown()
    function_app.app.startup_task_done = False
    assert invoke.lifespan == ["startup", "shutdown"]
