"""Readiness, migrations, metrics and database restarts against the real servers."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from sqlalchemy import text

from api.db import head_revision

pytestmark = pytest.mark.integration


async def test_ready_when_everything_is_up(client):
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "failed": [],
        "checks": {"database": "ok", "redis": "ok"},
    }


async def test_ready_names_a_migration_that_is_behind(client, app):
    head = head_revision()
    async with app.state.engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'behind'"))
    try:
        r = await client.get("/ready")
        assert r.status_code == 503
        assert r.json()["failed"] == ["database"]
        assert "migrations not at head" in r.json()["checks"]["database"]
    finally:
        async with app.state.engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": head})
    assert (await client.get("/ready")).status_code == 200


def test_models_match_the_migrations(stack):
    """`alembic check` fails if the models changed without a migration."""
    proc = subprocess.run(["alembic", "check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_migrations_are_idempotent_and_serialised(stack):
    """Two migrators at once (a deploy racing an operator): both succeed, one waits."""
    procs = [
        subprocess.Popen(["alembic", "upgrade", "head"], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err


async def test_metrics_count_requests(client):
    await client.get("/health")
    body = (await client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/health",status="200"}' in body
    assert "cache_events_total" in body


async def test_database_restart_costs_errors_only_while_down(client, auth, stack):
    item = (await client.post("/items", json={"name": "durable"}, headers=auth)).json()
    assert (await client.get("/items?limit=1")).status_code == 200  # the pool holds connections
    stack.compose("stop", "db")
    try:
        r = await client.get(f"/items?after={item['id'] - 1}&limit=1")
        assert r.status_code == 503
        assert "database is unavailable" in r.json()["detail"]
        assert (await client.get("/health")).status_code == 200
    finally:
        stack.compose("start", "db")
        stack.wait_healthy("db")
    # Back up: every request succeeds at once; pre-ping replaced the pool's dead connections.
    statuses = await asyncio.gather(
        *(client.get(f"/items?after={item['id'] - 1}&limit=1") for _ in range(12))
    )
    assert [s.status_code for s in statuses] == [200] * 12
    started = time.monotonic()
    assert (await client.get("/ready")).status_code == 200
    assert time.monotonic() - started < 2
