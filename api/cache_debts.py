"""Cache invalidations owed across processes, kept in PostgreSQL while Redis is away.

A write that commits while Redis is unreachable cannot update the item's cached copy, and Redis
keeps its data across a restart (append-only file): the old copy comes back with it. The process
that made the write remembers that (api/cache.py), but every other gunicorn worker and api
replica would serve the old copy. So the debt is also written here, and every new Redis
connection of every process pays all debts (DEL) before it is used: a Redis that restarted is
reached only through new connections, so no process reads it before the old copies are gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from sqlalchemy import and_, delete, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from core.models import CacheDebt

log = logging.getLogger(__name__)

# A new Redis connection waits at most this long for the ledger; then it fails, and the cache is
# skipped until its probe connects again (api/cache.py).
LEDGER_TIMEOUT_SECONDS = 2.0


class CacheDebts:
    def __init__(self, engine: AsyncEngine, key: Callable[[int], str]) -> None:
        self.engine = engine
        self.key = key

    async def record(self, item_id: int) -> None:
        """After a write whose cache update failed. A debt recorded again is renewed, so a
        payer that read the older one does not erase it."""
        statement = pg_insert(CacheDebt).values(item_id=item_id)
        statement = statement.on_conflict_do_update(
            index_elements=[CacheDebt.item_id], set_={"owed_at": statement.excluded.owed_at}
        )
        async with self.engine.begin() as db:
            await db.execute(statement)

    async def pay(self, connection: AbstractConnection) -> None:
        """redis-py's connect callback: the handshake, then every debt, before the connection
        serves a command."""
        await connection.on_connect()
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_SECONDS), self.engine.connect() as db:
                debts = (await db.execute(select(CacheDebt.item_id, CacheDebt.owed_at))).all()
                if not debts:
                    return
                await connection.send_command("DEL", *(self.key(item_id) for item_id, _ in debts))
                await connection.read_response()
                paid = [
                    and_(CacheDebt.item_id == item_id, CacheDebt.owed_at == owed_at)
                    for item_id, owed_at in debts
                ]
                await db.execute(delete(CacheDebt).where(or_(*paid)))
                await db.commit()
        except Exception as exc:
            # Unpaid debts: this connection must not be used (redis-py disconnects it).
            raise RedisConnectionError(f"cache debts could not be paid: {exc!r}") from exc
        log.warning("cache debts paid", extra={"items": [item_id for item_id, _ in debts]})
