"""The app in-process, on the stack's real PostgreSQL and Redis; jobs run by its real worker.
With `auth` and `stack` (tests/conftest.py), the fixtures a test of an endpoint or a job needs."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from tests.support.stack import Stack


@pytest.fixture(scope="session")
async def app(stack: Stack) -> AsyncIterator[FastAPI]:
    """The kit's app, its lifespan run once per session (engine, Redis, job queue)."""
    from api.main import create_app

    application = create_app()
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Requests to the app in this process: no server, no network between them."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
