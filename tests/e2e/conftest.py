"""HTTP(S) clients for the running stack: through Traefik where this machine has it, else direct."""

from __future__ import annotations

import httpx
import pytest

from tests.support import stack as stack_module
from tests.support.stack import wait_until


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
