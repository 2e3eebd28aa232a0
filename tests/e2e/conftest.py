"""HTTP(S) clients for the running stack: through Traefik where this machine has it, else direct."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from api.auth import WRITE_SCOPE, issue_token
from core.settings import Settings
from tests import stack as stack_module

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def base_url(stack) -> str:
    if stack.with_proxy:
        return f"https://127.0.0.1:{stack_module.HTTPS_PORT}"
    return f"http://127.0.0.1:{stack.published_port('api', 8000)}"


@pytest.fixture(scope="session")
def http(stack, base_url):
    """Requests as a user sends them: to api.localhost (SNI and Host) over the published port."""
    headers = {"Host": "api.localhost"} if stack.with_proxy else {}
    with httpx.Client(base_url=base_url, headers=headers, verify=False, timeout=10) as client:
        wait_until(lambda: client.get("/ready").status_code == 200, within=60)
        yield client


@pytest.fixture(scope="session")
def auth():
    # The stack runs with the development JWT secret (no .env), as a fresh clone does.
    token = issue_token(Settings(jwt_secret=Settings().jwt_secret), "e2e", [WRITE_SCOPE])
    return {"Authorization": f"Bearer {token}"}


def wait_until(condition: Callable[[], object], within: float, every: float = 0.5):
    deadline = time.monotonic() + within
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
            if result:
                return result
        except (httpx.HTTPError, KeyError) as exc:
            last_error = exc
        time.sleep(every)
    raise TimeoutError(f"not true within {within}s (last error: {last_error!r})")


def wait_for_job(http, location: str, within: float = 90) -> dict:
    return wait_until(
        lambda: (body := http.get(location).json())["state"] in ("succeeded", "failed") and body,
        within=within,
    )
