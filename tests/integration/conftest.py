"""The app in-process, on the stack's real PostgreSQL and Redis; jobs run by its real worker."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from api.auth import WRITE_SCOPE, issue_token
from core.settings import get_settings
from tests.support import stack as stack_module
from tests.support.stack import JOB_FINISHED

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


async def wait_for_job(client, location: str, within: float = 60, states=JOB_FINISHED):
    """The shared polling (tests/support/), in a worker thread: each poll is sent back to this
    event loop, which keeps serving the in-process app meanwhile."""
    loop = asyncio.get_running_loop()

    def get_job() -> dict:
        return asyncio.run_coroutine_threadsafe(client.get(location), loop).result().json()

    return await asyncio.to_thread(
        stack_module.wait_for_job, get_job, within=within, every=0.25, states=states
    )
