"""N-1: the previous release's application against this release's migrated schema, under load on
the example app's endpoints, with no 5xx. That is the state between a deploy's migrate step and
its switch, and after a rollback (which undoes no migration).

The previous release is KIT_PREVIOUS_RELEASE (a git ref: the tag or commit production runs), by
default the newest tag before HEAD, else HEAD's parent. Its images are built from `git archive`
of that ref and its stack started as it was; then this checkout's migrate step runs against that
database while the load goes on. Last, a contract step (a column the previous release reads,
dropped) proves the check sees what it exists to catch.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.readiness import head_revision
from core.settings import get_settings
from tests.support import ROOT
from tests.support.auth import auth_headers
from tests.support.load import LoadResult, cycle, get, post, steady_load
from tests.support.stack import Stack, require, run

PROJECT = os.environ.get("KIT_N1_TEST_PROJECT", "kit-n1")
# Not the session stack's ports (tests/compose.test.yaml): both may be up at once.
PORTS = {"KIT_TEST_DB_PORT": "55433", "KIT_TEST_REDIS_PORT": "56380"}
SETTLE_SECONDS = 3
AFTER_MIGRATE_SECONDS = 8


def previous_release() -> str | None:
    """The git ref of the release before HEAD, or None if there is none to be had."""
    if ref := os.environ.get("KIT_PREVIOUS_RELEASE"):
        return ref
    tag = run(["git", "describe", "--tags", "--abbrev=0", "HEAD^"], check=False)
    if tag.returncode == 0 and tag.stdout.strip():
        return tag.stdout.strip()
    parent = run(["git", "rev-parse", "--verify", "-q", "HEAD^"], check=False)
    return parent.stdout.strip() if parent.returncode == 0 else None


def stack_of(checkout: Path, tag: str) -> Stack:
    files = (str(checkout / "compose.yaml"), str(checkout / "tests" / "compose.test.yaml"))
    return Stack(
        project=PROJECT,
        files=files,
        with_proxy=False,
        env={**PORTS, "APP_IMAGE": f"{PROJECT}-test", "APP_TAG": tag},
    )


@pytest.fixture(scope="module")
def previous(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Stack]]:
    """The previous release's stack (api, worker and what they need), serving; its git ref."""
    ref = previous_release()
    require(ref is not None, "a previous release (KIT_PREVIOUS_RELEASE, a tag, or HEAD^)")
    assert ref
    checkout = tmp_path_factory.mktemp("previous")
    archive = subprocess.run(["git", "archive", ref], cwd=ROOT, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(checkout)], input=archive.stdout, check=True)
    stack = stack_of(checkout, "previous")
    try:
        stack.compose("up", "-d", "--build", "--wait", "--wait-timeout", "240", "api", "worker")
        yield ref, stack
    finally:
        stack.down()
        images = run(["docker", "images", "-q", "--filter", f"reference={PROJECT}-test-*"])
        if images.stdout.split():
            run(["docker", "rmi", "-f", *set(images.stdout.split())], check=False)


def five_hundreds(result: LoadResult) -> list[str]:
    return [f"{o.method} {o.path}: {o.kind}" for o in result.outcomes if o.kind.startswith("5")]


def test_the_previous_release_serves_on_this_releases_schema(previous):
    ref, old = previous
    base = f"http://127.0.0.1:{old.published_port('api', 8000)}"
    writer = auth_headers(get_settings(), "n-1")
    with httpx.Client(base_url=base, timeout=10) as client:
        item = client.post("/items", json={"name": "before the migration"}, headers=writer)
        assert item.status_code == 201, item.text
        job = client.post("/jobs", json={"cost": 1000, "seed": "n-1"}, headers=writer)
        assert job.status_code == 202, job.text
    before = old.psql("SELECT version_num FROM alembic_version")
    traffic = cycle(
        get(f"/items/{item.json()['id']}"),
        get("/items?limit=10"),
        post("/items", {"name": "written by the previous release"}, **writer),
        post("/jobs", {"cost": 1000, "seed": "n-1 load"}, **writer),
        get(job.headers["location"]),
    )
    # This checkout's migrate step, on the previous release's database (its project, its
    # volumes), with nothing else of this release started.
    new = stack_of(ROOT, "next")
    with steady_load(base, traffic, connections=8, rate=80, max_seconds=600) as load:
        time.sleep(SETTLE_SECONDS)
        migrated = new.compose("run", "--rm", "--no-deps", "--build", "migrate", timeout=600)
        time.sleep(AFTER_MIGRATE_SECONDS)
    assert old.psql("SELECT version_num FROM alembic_version") == head_revision(), migrated.stdout
    print(f"N-1: {ref} (schema {before}) on this release's schema ({head_revision()})")
    assert five_hundreds(load) == [], f"{load.summary()}\n{old.logs('api')}"
    assert load.failures() == [], load.summary()
    assert sum(o.method == "POST" and o.ok for o in load.outcomes) > 20, load.summary()

    # What the check is for: a contract step taken too early (the column the previous release
    # still reads, dropped) turns its reads into 500s, which the same load counts.
    old.psql("ALTER TABLE items DROP COLUMN description")
    with steady_load(base, cycle(get("/items?limit=10")), connections=2, rate=20) as broken:
        time.sleep(2)
    assert five_hundreds(broken), broken.summary()
