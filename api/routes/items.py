"""The example resource: items in PostgreSQL, single reads through the Redis cache.

The hot paths (a read, a page, a create) are one SQLAlchemy Core statement each on an autocommit
connection, answered as JSON bytes: no ORM unit of work, and no second validation of the response
model (the models still describe the answers in the OpenAPI document). Updates and deletes, rarer
and with a row lock to hold, use an ORM session and its transaction.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, Response, status
from sqlalchemy import Table, bindparam, insert, select

from api.auth import require_writer
from api.deps import CacheDep, PoolQueueDep, SessionDep, item_cache_of, pool_queue_of
from api.errors import error_responses
from api.schemas import PAGE_SIZE_MAX, ItemIn, ItemOut, ItemPage
from core.models import Item

# Every operation here can meet a database outage.
router = APIRouter(prefix="/items", tags=["items"], responses=error_responses(503))

ItemId = Annotated[int, Path(ge=1, le=2**63 - 1, description="The item's id")]

# Built once: SQLAlchemy's compiled cache then serves every request.
ITEMS = cast(Table, Item.__table__)  # a declarative class's table is a Table
ITEM_BY_ID = select(ITEMS).where(ITEMS.c.id == bindparam("item_id"))
# Keyset pagination: constant cost per page however deep, stable under inserts.
PAGE_AFTER = (
    select(ITEMS)
    .where(ITEMS.c.id > bindparam("after"))
    .order_by(ITEMS.c.id)
    .limit(bindparam("rows"))
)
INSERT_ITEM = insert(ITEMS).returning(*ITEMS.c)


def _not_found(item_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, detail=f"item {item_id} not found")


def _json(model: ItemOut | ItemPage, **options: Any) -> Response:
    return Response(model.model_dump_json().encode(), media_type="application/json", **options)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ItemOut,
    dependencies=[Depends(require_writer)],
    responses=error_responses(400, 401, 403, 413),
)
async def create_item(body: ItemIn, pool_queue: PoolQueueDep, cache: CacheDep) -> Response:
    # One statement in autocommit: the row is committed when its RETURNING row arrives.
    async with pool_queue.statement() as db:
        row = (await db.execute(INSERT_ITEM, body.model_dump())).one()
    out = ItemOut.model_validate(row._mapping)
    json_body = out.model_dump_json().encode()
    await cache.put(out.id, json_body)
    return Response(
        json_body,
        status_code=status.HTTP_201_CREATED,
        media_type="application/json",
        headers={"Location": f"/items/{out.id}"},
    )


@router.get("/{item_id}", response_model=ItemOut, responses=error_responses(404))
async def get_item(item_id: ItemId, request: Request) -> Response:
    # The hottest path calls the accessor itself: a dependency costs more to solve
    # than the Redis GET it would hand over.
    cache = item_cache_of(request)
    cached = await cache.get(item_id)
    if cached is False:
        raise _not_found(item_id)
    if cached is not None:
        return Response(cached, media_type="application/json", headers={"X-Cache": "hit"})
    # A connection only on a miss: a hit is the hot path and needs no database at all.
    async with pool_queue_of(request).statement() as db:
        row = (await db.execute(ITEM_BY_ID, {"item_id": item_id})).first()
    if row is None:
        raise _not_found(item_id)
    body = ItemOut.model_validate(row._mapping).model_dump_json().encode()
    await cache.fill(item_id, body)
    return Response(body, media_type="application/json", headers={"X-Cache": "miss"})


@router.get("", response_model=ItemPage)
async def list_items(
    pool_queue: PoolQueueDep,
    limit: Annotated[int, Query(ge=1, le=PAGE_SIZE_MAX, description="Items per page")] = 20,
    after: Annotated[
        int, Query(ge=0, le=2**63 - 1, description="The next_cursor of the previous page")
    ] = 0,
) -> Response:
    async with pool_queue.statement() as db:
        rows = (await db.execute(PAGE_AFTER, {"after": after, "rows": limit + 1})).all()
    page = [ItemOut.model_validate(row._mapping) for row in rows[:limit]]
    return _json(ItemPage(items=page, next_cursor=page[-1].id if len(rows) > limit else None))


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
    await cache.put(out.id, out.model_dump_json().encode())
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
