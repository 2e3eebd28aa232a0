"""Items in real PostgreSQL, read through real Redis: the example of an endpoint's tests.

The fixtures (docs/development.md, Testing): `client` sends requests to the app in this process,
which uses the test stack's PostgreSQL and Redis; `auth` is the headers of a write (a token);
`app` is that app, for a look at its state (here its Redis client). No mocks: what a test reads
back is what the database and the cache hold.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from fastapi import FastAPI

from tests.support.auth import Headers


async def create_item(client: httpx.AsyncClient, auth: Headers, **body: Any) -> dict[str, Any]:
    """POST /items as a writer; the new item's body."""
    r = await client.post("/items", json={"name": "widget", **body}, headers=auth)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == f"/items/{r.json()['id']}"
    return r.json()


async def test_create_get_update_delete(client: httpx.AsyncClient, auth: Headers) -> None:
    item = await create_item(client, auth, description="first", price_cents=250)
    got = await client.get(f"/items/{item['id']}")
    assert got.status_code == 200
    assert got.json() == item

    r = await client.put(
        f"/items/{item['id']}", json={"name": "gadget", "price_cents": 300}, headers=auth
    )
    assert r.status_code == 200
    assert r.json()["name"] == "gadget"
    assert r.json()["description"] is None

    assert (await client.delete(f"/items/{item['id']}", headers=auth)).status_code == 204
    assert (await client.get(f"/items/{item['id']}")).status_code == 404
    assert (await client.delete(f"/items/{item['id']}", headers=auth)).status_code == 404
    r = await client.put(f"/items/{item['id']}", json={"name": "x"}, headers=auth)
    assert r.status_code == 404


async def test_unknown_item_is_404_with_message(client: httpx.AsyncClient) -> None:
    r = await client.get("/items/987654321")
    assert r.status_code == 404
    assert r.json()["detail"] == "item 987654321 not found"


async def test_pagination_walks_every_item_once(client: httpx.AsyncClient, auth: Headers) -> None:
    created = [(await create_item(client, auth, name=f"page-{i}"))["id"] for i in range(7)]
    seen: list[int] = []
    after = created[0] - 1
    while True:
        page = (await client.get(f"/items?limit=3&after={after}")).json()
        seen += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            break
        assert len(page["items"]) == 3
        after = page["next_cursor"]
    assert [i for i in seen if i in created] == created
    assert seen == sorted(seen)


async def test_read_after_write_is_never_stale(client: httpx.AsyncClient, auth: Headers) -> None:
    item = await create_item(client, auth, name="v0")
    await client.get(f"/items/{item['id']}")  # cached
    for version in range(1, 6):
        await client.put(f"/items/{item['id']}", json={"name": f"v{version}"}, headers=auth)
        r = await client.get(f"/items/{item['id']}")
        assert r.json()["name"] == f"v{version}"


async def test_concurrent_readers_cannot_restore_an_old_value(
    client: httpx.AsyncClient, auth: Headers, app: FastAPI
) -> None:
    """Readers racing a writer may fill the cache only if no writer has set it (SET NX)."""
    item = await create_item(client, auth, name="before")
    await app.state.redis.delete(f"item:{item['id']}")

    async def read() -> int:
        return (await client.get(f"/items/{item['id']}")).status_code

    writes = client.put(f"/items/{item['id']}", json={"name": "after"}, headers=auth)
    results = await asyncio.gather(*(read() for _ in range(20)), writes)
    assert all(status == 200 for status in results[:-1])
    # Whatever interleaving happened, once the write is answered the cache holds the new row.
    for _ in range(3):
        assert (await client.get(f"/items/{item['id']}")).json()["name"] == "after"
