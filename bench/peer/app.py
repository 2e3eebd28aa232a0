"""Baseline (b): the template-style peer, what a FastAPI user deploys instead of the kit.

The shape of the FastAPI full-stack template's backend
(github.com/fastapi/full-stack-fastapi-template):
`fastapi run --workers 4`, SQLModel over a synchronous SQLAlchemy engine with psycopg, a Session
per request from a generator dependency, `def` endpoints (FastAPI runs them in its thread pool),
no cache. It reads and writes the kit's own `items` table in the bench stack's PostgreSQL, as the
kit's app role, so both do the same work on the same data:

- GET /items/{id}: session.get, 404 if absent (the template's read_item);
- GET /items?limit=&after=: the kit's keyset page (id > after ORDER BY id LIMIT n+1). The
  template pages with OFFSET and also runs a count(*) per page, which costs more: the peer is
  given the kit's cheaper query, so the comparison does not flatter the kit;
- POST /items: add, commit, refresh (the template's create_item; refresh is its second query).
  No authentication here, where the template also loads the current user from the database: that
  too is left out in the peer's favour (the kit's create verifies a JWT).

Nothing runs at import but building the app and the engine (no connection until a request).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException, Query
from sqlalchemy import BigInteger, Column, DateTime, Identity, Text, func
from sqlmodel import Field, Session, SQLModel, create_engine, select

DATABASE_URL = (
    "postgresql+psycopg://"
    f"{os.environ.get('POSTGRES_USER', 'app_rw')}:{os.environ.get('POSTGRES_PASSWORD', 'app_rw')}"
    f"@{os.environ.get('POSTGRES_HOST', 'db')}:{os.environ.get('POSTGRES_PORT', '5432')}"
    f"/{os.environ.get('POSTGRES_DB', 'app')}"
)
# The template's engine: create_engine(str(settings.SQLALCHEMY_DATABASE_URI)), default pool
# (5 + 10 overflow per process).
engine = create_engine(DATABASE_URL)


class ItemBase(SQLModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=10_000)
    price_cents: int = Field(default=0, ge=0, le=10**12)


class ItemCreate(ItemBase):
    pass


class Item(ItemBase, table=True):
    __tablename__ = "items"

    id: int | None = Field(
        default=None, sa_column=Column(BigInteger, Identity(always=True), primary_key=True)
    )
    description: str | None = Field(default=None, sa_column=Column(Text))
    price_cents: int = Field(default=0, sa_column=Column(BigInteger, nullable=False))
    created_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now())
    )
    updated_at: datetime | None = Field(
        default=None, sa_column=Column(DateTime(timezone=True), server_default=func.now())
    )


class ItemPublic(ItemBase):
    id: int
    created_at: datetime
    updated_at: datetime


class ItemsPublic(SQLModel):
    items: list[ItemPublic]
    next_cursor: int | None


def get_db() -> Iterator[Session]:
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_db)]

app = FastAPI()


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/items/{item_id}", response_model=ItemPublic)
def read_item(session: SessionDep, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None:
        raise HTTPException(status_code=404, detail="Item not found")
    return item


@app.get("/items", response_model=ItemsPublic)
def read_items(
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[int, Query(ge=0)] = 0,
) -> ItemsPublic:
    rows = session.exec(
        select(Item).where(Item.id > after).order_by(Item.id).limit(limit + 1)  # type: ignore[arg-type,operator]
    ).all()
    page = [ItemPublic.model_validate(row) for row in rows[:limit]]
    return ItemsPublic(items=page, next_cursor=page[-1].id if len(rows) > limit else None)


@app.post("/items", response_model=ItemPublic, status_code=201)
def create_item(session: SessionDep, item_in: ItemCreate) -> Item:
    item = Item.model_validate(item_in)
    session.add(item)
    session.commit()
    session.refresh(item)
    return item
