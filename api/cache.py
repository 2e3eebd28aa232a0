"""Read-through cache of single items in Redis.

Consistency: writers overwrite the key after their commit (SET), and a delete leaves a short
tombstone; readers fill a missing key only with SET NX. So a reader that loaded a row before a
concurrent write can never put the old row back over the writer's value.

Redis failures never fail a request: they are logged, counted, and the cache is skipped altogether
until a background probe finds Redis answering again, so requests never wait on a Redis that is
down (its name may not even resolve while its container is stopped). A write that could not reach
Redis is remembered, and its key deleted before this process uses the cache again: Redis keeps its
data across a restart, so without that the old row would come back with it; the debt is also
written to PostgreSQL, so the other processes delete it too before they read (api/cache_debts.py).
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.cache_debts import CacheDebts
from api.metrics import CACHE_BYPASS, CACHE_ERROR, CACHE_HIT, CACHE_MISS

log = logging.getLogger(__name__)

TOMBSTONE = b"-"


class ItemCache:
    def __init__(
        self,
        redis: Redis,
        ttl_seconds: int,
        retry_after_seconds: float,
        debts: CacheDebts | None = None,
    ) -> None:
        self.redis = redis
        self.debts = debts
        self.ttl = ttl_seconds
        self.retry_after = retry_after_seconds
        self._down = False
        self._probe: asyncio.Task[None] | None = None
        self._unflushed: set[int] = set()

    @staticmethod
    def key(item_id: int) -> str:
        return f"item:{item_id}"

    async def _usable(self) -> bool:
        """Up, and no invalidation owed from an earlier failure."""
        if self._down:
            return False
        if self._unflushed:
            owed = list(self._unflushed)
            try:
                await self.redis.delete(*(self.key(i) for i in owed))
            except (RedisError, OSError) as exc:
                self._failed("invalidate", exc)
                return False
            self._unflushed.difference_update(owed)
        return True

    def _failed(self, operation: str, exc: Exception) -> None:
        CACHE_ERROR.inc()
        if self._down:
            return
        self._down = True
        log.warning(
            "cache unavailable, serving from the database",
            extra={"operation": operation, "error": repr(exc)},
        )
        self._probe = asyncio.get_running_loop().create_task(self._wait_for_redis())

    async def _wait_for_redis(self) -> None:
        """Every retry_after seconds, one PING off the request path; the cache is used again
        (invalidations owed first) once one succeeds."""
        while True:
            await asyncio.sleep(self.retry_after)
            try:
                await self.redis.ping()
            except (RedisError, OSError) as exc:
                log.debug("cache still unavailable", extra={"error": repr(exc)})
                continue
            self._down = False
            log.warning("cache available again")
            return

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()

    async def get(self, item_id: int) -> bytes | bool | None:
        """The cached item's JSON, ready to send; False where the item is known deleted; None on a
        miss. Bytes, not a model: parsing and re-serialising a hit cost more than Redis did."""
        if not await self._usable():
            CACHE_BYPASS.inc()
            return None
        try:
            raw = await self.redis.get(self.key(item_id))
        except (RedisError, OSError) as exc:
            self._failed("get", exc)
            return None
        if raw is None:
            CACHE_MISS.inc()
            return None
        CACHE_HIT.inc()
        if isinstance(raw, str):  # only from a client made with decode_responses=True
            raw = raw.encode()
        if raw == TOMBSTONE:
            return False
        return raw

    async def fill(self, item_id: int, body: bytes) -> None:
        """After a miss: only if no writer has set the key meanwhile."""
        await self._set(item_id, body, only_if_absent=True)

    async def put(self, item_id: int, body: bytes) -> None:
        """After a committed create or update: the item's JSON, as answered."""
        await self._set(item_id, body, only_if_absent=False)

    async def forget(self, item_id: int) -> None:
        """After a committed delete."""
        await self._set(item_id, TOMBSTONE, only_if_absent=False)

    async def _set(self, item_id: int, value: bytes, *, only_if_absent: bool) -> None:
        if await self._usable():
            try:
                await self.redis.set(self.key(item_id), value, ex=self.ttl, nx=only_if_absent)
                return
            except (RedisError, OSError) as exc:
                self._failed("set", exc)
        if not only_if_absent:
            # A write that did not land: its old value must not survive the Redis outage, for
            # this process nor for the others.
            self._unflushed.add(item_id)
            if self.debts is not None:
                try:
                    await self.debts.record(item_id)
                except Exception as exc:
                    log.error(
                        "cache debt not recorded: other processes may serve the old copy",
                        extra={"item_id": item_id, "error": repr(exc)},
                    )
