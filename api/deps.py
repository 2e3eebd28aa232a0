"""Request-scoped dependencies, taken from what the lifespan put on app.state."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.cache import ItemCache
from api.settings import Settings


async def session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions() as db_session:
        yield db_session


Session = Annotated[AsyncSession, Depends(session)]


async def read_session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessions(read_only=True) as db_session:
        yield db_session


ReadSession = Annotated[AsyncSession, Depends(read_session)]


async def cache(request: Request) -> ItemCache:
    return request.app.state.cache


Cache = Annotated[ItemCache, Depends(cache)]


async def settings(request: Request) -> Settings:
    return request.app.state.settings
