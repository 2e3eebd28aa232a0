"""The app in-process, on the stack's real PostgreSQL and Redis; jobs run by its real worker."""

from __future__ import annotations

import httpx
import pytest


@pytest.fixture(scope="session")
async def app(stack):
    from api.main import create_app

    application = create_app()
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c
