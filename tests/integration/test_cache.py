"""The read-through cache in real Redis: hits, invalidation, TTL, and Redis being down."""

from __future__ import annotations

import asyncio
import time


async def test_second_read_is_a_cache_hit(client, auth, app):
    item = (await client.post("/items", json={"name": "c"}, headers=auth)).json()
    await app.state.redis.delete(f"item:{item['id']}")
    first = await client.get(f"/items/{item['id']}")
    second = await client.get(f"/items/{item['id']}")
    assert first.headers["x-cache"] == "miss"
    assert second.headers["x-cache"] == "hit"
    assert first.json() == second.json()
    ttl = await app.state.redis.ttl(f"item:{item['id']}")
    assert 0 < ttl <= app.state.settings.cache_ttl_seconds


async def test_cached_row_changed_behind_the_api_is_served_until_invalidated(client, auth, app):
    """Proves reads really come from Redis: a row edited in SQL is not seen until a write."""
    from sqlalchemy import text

    item = (await client.post("/items", json={"name": "orig"}, headers=auth)).json()
    await client.get(f"/items/{item['id']}")
    async with app.state.engine.begin() as conn:
        await conn.execute(
            text("UPDATE items SET name = 'sql-edit' WHERE id = :id"), {"id": item["id"]}
        )
    assert (await client.get(f"/items/{item['id']}")).json()["name"] == "orig"
    await client.put(f"/items/{item['id']}", json={"name": "api-edit"}, headers=auth)
    assert (await client.get(f"/items/{item['id']}")).json()["name"] == "api-edit"


async def test_delete_leaves_a_tombstone(client, auth, app):
    item = (await client.post("/items", json={"name": "gone"}, headers=auth)).json()
    await client.get(f"/items/{item['id']}")
    await client.delete(f"/items/{item['id']}", headers=auth)
    assert await app.state.redis.get(f"item:{item['id']}") == b"-"
    r = await client.get(f"/items/{item['id']}")
    assert r.status_code == 404


def _metric(app, event: str) -> float:
    from api.metrics import CACHE_EVENTS

    return CACHE_EVENTS.labels(event=event)._value.get()


async def test_redis_down_serves_from_database(client, auth, app, stack):
    item = (await client.post("/items", json={"name": "survivor"}, headers=auth)).json()
    errors_before = _metric(app, "error")
    stack.compose("stop", "redis")
    try:
        started = time.monotonic()
        for _ in range(5):
            r = await client.get(f"/items/{item['id']}")
            assert r.status_code == 200
            assert r.json()["name"] == "survivor"
        assert time.monotonic() - started < 5, "a dead Redis must not slow every request"
        assert _metric(app, "error") > errors_before

        r = await client.put(f"/items/{item['id']}", json={"name": "edited"}, headers=auth)
        assert r.status_code == 200

        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["failed"] == ["redis"]

        job = await client.post("/jobs", json={"cost": 10}, headers=auth)
        assert job.status_code == 503
        assert "nothing was queued" in job.json()["detail"]
    finally:
        stack.compose("start", "redis")
        stack.wait_healthy("redis")
    # The cache is used again once its background probe finds Redis (every retry_after seconds).
    deadline = time.monotonic() + app.state.settings.cache_retry_after_seconds + 10
    while app.state.cache._down and time.monotonic() < deadline:  # noqa: ASYNC110 - a flag
        await asyncio.sleep(0.2)
    assert not app.state.cache._down, "the cache never came back after Redis did"
    assert (await client.get("/ready")).status_code == 200
    # The write made while Redis was down is what a read returns now.
    assert (await client.get(f"/items/{item['id']}")).json()["name"] == "edited"


async def test_a_healthy_write_costs_one_redis_command(client, auth, app):
    """Invalidations are owed only after a failure; a normal write is one SET, no DEL before it."""
    item = (await client.post("/items", json={"name": "one-call"}, headers=auth)).json()

    async def dels() -> int:
        return (await app.state.redis.info("commandstats")).get("cmdstat_del", {}).get("calls", 0)

    before = await dels()
    r = await client.put(f"/items/{item['id']}", json={"name": "one-call-2"}, headers=auth)
    assert r.status_code == 200
    await client.delete(f"/items/{item['id']}", headers=auth)
    assert await dels() == before
