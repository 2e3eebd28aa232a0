"""Readiness, migrations, metrics and database restarts against the real servers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid

import psycopg
from sqlalchemy import text

from api.migration_lock import MIGRATION_LOCK_ID
from api.readiness import head_revision
from core.settings import get_settings
from tests.support.stack import wait_until


async def test_ready_when_everything_is_up(client):
    r = await client.get("/ready")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "status": "ready",
        "failed": [],
        "checks": {"database": "ok", "redis": "ok", "archive": "ok"},
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


def test_migrators_racing_on_an_empty_database_take_turns(stack):
    """Two migrators (the schema, then the app role) on a new, empty database (a deploy racing
    an operator). The test holds the migration lock first, so both are seen waiting on it;
    released, they run one after the other: both succeed and the schema is at head. Without the
    lock the second would fail creating tables (or the role) the first made."""
    server = get_settings().database_url_sync.replace("+psycopg", "").rsplit("/", 1)[0]
    database = f"race_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(f"{server}/postgres", autocommit=True)
    try:
        admin.execute(f'CREATE DATABASE "{database}"')
        holder = psycopg.connect(f"{server}/{database}", autocommit=True)
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        env = {**os.environ, "POSTGRES_DB": database}
        procs = [
            subprocess.Popen(
                ["python", "-m", "api.migrate"], stderr=subprocess.PIPE, text=True, env=env
            )
            for _ in range(2)
        ]

        def waiting() -> int:
            return holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND objid = %s",
                (MIGRATION_LOCK_ID,),
            ).fetchone()[0]

        wait_until(lambda: waiting() == 2, within=60, every=0.2)
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
        version = holder.execute("SELECT version_num FROM alembic_version").fetchall()
        assert version == [(head_revision(),)]
        holder.close()
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


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
