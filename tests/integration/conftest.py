"""The app in-process, on the stack's real PostgreSQL and Redis; jobs run by its real worker."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from api.auth import WRITE_SCOPE, issue_token
from core.settings import get_settings

pytestmark = pytest.mark.integration


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


@pytest.fixture(scope="session")
def auth():
    return {"Authorization": f"Bearer {issue_token(get_settings(), 'tests', [WRITE_SCOPE])}"}


async def wait_for_job(client, location: str, within: float = 60, states=("succeeded", "failed")):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        body = (await client.get(location)).json()
        if body["state"] in states:
            return body
        await asyncio.sleep(0.25)
    raise TimeoutError(f"job at {location} still {body['state']} after {within}s")
