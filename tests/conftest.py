"""Shared fixtures, and the markers every test gets from its folders. The in-process app of the
integration tests talks to the test stack's real PostgreSQL and Redis (published on loopback by
tests/compose.test.yaml), and its jobs are run by the stack's real Celery worker. These variables
are set before any api module reads them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from core.settings import get_settings
from tests.support import stack as stack_module
from tests.support.auth import Headers, auth_headers

TESTS = Path(__file__).parent

os.environ.setdefault("ENVIRONMENT", "test")
os.environ.setdefault("POSTGRES_HOST", "127.0.0.1")
os.environ.setdefault("POSTGRES_PORT", str(stack_module.DB_PORT))
os.environ.setdefault("REDIS_URL", f"redis://127.0.0.1:{stack_module.REDIS_PORT}/0")
os.environ.setdefault("CELERY_TASK_TIME_LIMIT", "20")
os.environ.setdefault("CELERY_VISIBILITY_TIMEOUT", "25")

PROXY_BANNER = (
    "\n" + "!" * 78 + "\n"
    "!! PROXY NOT EXERCISED: no traefik image on this machine; the e2e tests reached the api\n"
    "!! directly. HTTPS, redirects, headers and load balancing through Traefik were NOT tested.\n"
    + "!" * 78
    + "\n"
)


@pytest.fixture(scope="session")
def stack():
    """The kit's compose stack, built and brought up once per test session."""
    the_stack = stack_module.Stack()
    if not the_stack.with_proxy:
        if os.environ.get("CI"):
            pytest.fail(f"CI lacks {stack_module.TRAEFIK_IMAGE}: .ci/run must build it")
        sys.stderr.write(PROXY_BANNER)
    the_stack.up()
    yield the_stack
    if not os.environ.get("KIT_TEST_KEEP"):
        the_stack.down()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each folder a test sits in that names a marker (pyproject.toml) marks it: tests/e2e/full/
    gives e2e and full. The full tier runs last, so a run of everything fails on the quick ones
    first; the sort is stable, keeping unit and static first (testpaths)."""
    markers = {line.split(":")[0].strip() for line in config.getini("markers")}
    for item in items:
        folders = item.path.relative_to(TESTS).parts[:-1] if item.path.is_relative_to(TESTS) else ()
        for folder in folders:
            if folder in markers:
                item.add_marker(folder)
    items.sort(key=lambda item: item.get_closest_marker("full") is not None)


@pytest.fixture(scope="module")
def auth() -> Headers:
    """Headers for a write (POST, PUT, DELETE): a token signed with the development key, which
    the in-process app and the test stack use. Per module: a token lasts JWT_TTL_SECONDS."""
    return auth_headers(get_settings(), "tests")


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if getattr(config, "_kit_stack_used", False) and not stack_module.image_exists(
        stack_module.TRAEFIK_IMAGE
    ):
        terminalreporter.write(PROXY_BANNER, red=True, bold=True)


@pytest.fixture(scope="session", autouse=True)
def _remember_stack_use(request):
    yield
    request.config._kit_stack_used = any(
        "stack" in item.fixturenames for item in request.session.items
    )
