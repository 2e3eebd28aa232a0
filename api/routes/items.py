"""The example resource: items in PostgreSQL, single reads through the Redis cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from sqlalchemy import select

from api.auth import require_writer
from api.deps import CacheDep, ReadSessionDep, SessionDep
from api.errors import error_responses
from api.schemas import PAGE_SIZE_MAX, ItemIn, ItemOut, ItemPage
from core.models import Item

# Every operation here can meet a database outage.
router = APIRouter(prefix="/items", tags=["items"], responses=error_responses(503))

ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The item's id")]


def _not_found(item_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemOut,
    dependencies=[Depends(require_writer)],
    responses=error_responses(400, 401, 403, 413),
)
async def create_item(body: ItemIn, db: SessionDep, cache: CacheDep, response: Response) -> ItemOut:
    item = Item(**body.model_dump())
    db.add(item)
    await db.flush()
    out = ItemOut.model_validate(item)
    await db.commit()
    await cache.put(out)
    response.headers["Location"] = f"/items/{item.id}"
    return out


@router.get("/{item_id}", response_model=ItemOut, responses=error_responses(404))
async def get_item(item_id: ItemId, cache: CacheDep, request: Request) -> Response:
    cached = await cache.get(item_id)
    if cached is False:
        raise _not_found(item_id)
    if cached is not None:
        return Response(cached, media_type="application/json", headers={"X-Cache": "hit"})
    # A session only on a miss: a hit is the hot path and needs no database at all.
    async with request.app.state.sessions(read_only=True) as db:
        item = await db.get(Item, item_id)
    if item is None:
        raise _not_found(item_id)
    body = ItemOut.model_validate(item).model_dump_json().encode()
    await cache.fill(item_id, body)
    return Response(body, media_type="application/json", headers={"X-Cache": "miss"})


@router.get("", response_model=ItemPage)
async def list_items(
    db: ReadSessionDep,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX, description="Items per page")] = 20,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="The next_cursor of the previous page")
    ] = 0,
) -> ItemPage:
    # Keyset pagination: constant cost per page however deep, stable under inserts.
    rows = (
        await db.scalars(select(Item).where(Item.id > after).order_by(Item.id).limit(limit + 1))
    ).all()
    page = [ItemOut.model_validate(row) for row in rows[:limit]]
    return ItemPage(items=page, next_cursor=page[-1].id if len(rows) > limit else None)


@router.put(
    "/{item_id}",
    response_model=ItemOut,
    dependencies=[Depends(require_writer)],
    responses=error_responses(400, 401, 403, 404, 413),
)
async def replace_item(item_id: ItemId, body: ItemIn, db: SessionDep, cache: CacheDep) -> ItemOut:
    item = await db.get(Item, item_id, with_for_update=True)
    if item is None:
        raise _not_found(item_id)
    for field, value in body.model_dump().items():
        setattr(item, field, value)
    await db.flush()
    out = ItemOut.model_validate(item)
    await db.commit()
    await cache.put(out)
    return out


@router.delete(
    "/{item_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    dependencies=[Depends(require_writer)],
    responses=error_responses(401, 403, 404),
)
async def delete_item(item_id: ItemId, db: SessionDep, cache: CacheDep) -> Response:
    item = await db.get(Item, item_id)
    if item is None:
        raise _not_found(item_id)
    await db.delete(item)
    await db.commit()
    await cache.forget(item_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
