"""Baseline (a): the single-process app deployment tutorials show. uvicorn, one worker, items in
an in-memory list, the same endpoint shapes as the kit. No database, no cache, no proxy."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI()
NOW = datetime.now(UTC)


class ItemIn(BaseModel):
    name: str
    description: str | None = None
    price_cents: int = 0


# dict[Any, Any]: what a bare `dict` means, to FastAPI's response validation too.
items: list[dict[Any, Any]] = [
    {
        "id": i,
        "name": f"item-{i}",
        "description": None,
        "price_cents": i,
        "created_at": NOW,
        "updated_at": NOW,
    }
    for i in range(1, 1001)
]


@app.get("/health")
async def health() -> dict[Any, Any]:
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def get_item(item_id: int) -> dict[Any, Any]:
    if not 1 <= item_id <= len(items):
        raise HTTPException(404, "not found")
    return items[item_id - 1]


@app.get("/items")
async def list_items(limit: int = 20, after: int = 0) -> dict[Any, Any]:
    page = items[after : after + limit]
    return {"items": page, "next_cursor": page[-1]["id"] if page else None}


@app.post("/items", status_code=201)
async def create_item(body: ItemIn) -> dict[Any, Any]:
    item = {"id": len(items) + 1, **body.model_dump(), "created_at": NOW, "updated_at": NOW}
    items.append(item)
    return item
