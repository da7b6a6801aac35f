"""The api's cache of code blocks: the lobby answers in milliseconds whatever MongoDB does.

A cached value is fresh while the fleet-wide generation (``P:blocks:gen``, bumped by
every admin write on any replica) is the one it was loaded under and it is younger than
``BLOCK_LIST_FRESH_SECONDS``. Otherwise one reload runs (single flight per key); a
request waits for it at most ``BLOCK_LIST_WAIT_MS`` when a copy no older than
``BLOCK_LIST_STALE_SECONDS`` exists, and gets that copy, marked stale, if the reload is
slower (it goes on in the background). With no usable copy, the request waits for the
reload and its errors (503) as before. Design: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.keys import Keys
from shared.settings import Settings

log = logging.getLogger(__name__)

Status = Literal["hit", "miss", "stale"]
GENERATION_TIMEOUT = 0.25  # seconds: a slow Redis must not slow the lobby down
NO_REDIS_FRESH = 5.0  # seconds a copy counts as fresh when the generation is unknown
MAX_ENTRIES = 10000


@dataclass(frozen=True, slots=True)
class Entry:
    value: Any
    generation: str | None
    loaded_at: float  # monotonic


@dataclass(frozen=True, slots=True)
class Cached:
    value: Any
    status: Status
    age: float  # seconds since it was loaded

    def headers(self) -> dict[str, str]:
        return {"X-Cache": self.status, "Age": str(int(self.age))}


class BlockCache:
    def __init__(self, redis: Redis, keys: Keys, settings: Settings) -> None:
        self._redis = redis
        self._keys = keys
        self._fresh = settings.block_list_fresh_seconds
        self._stale = settings.block_list_stale_seconds
        self._wait = settings.block_list_wait_ms / 1000
        self._entries: dict[str, Entry] = {}
        self._reloads: dict[str, asyncio.Task[Any]] = {}

    async def generation(self) -> str | None:
        """The fleet-wide generation of the blocks, or None if Redis does not answer."""
        try:
            async with asyncio.timeout(GENERATION_TIMEOUT):
                value = await self._redis.get(self._keys.blocks_generation)
        except (RedisError, TimeoutError, OSError):
            return None
        return str(value or "0")

    async def invalidate(self, block_id: str | None = None) -> None:
        """After an admin write: every replica's copies go stale (and the block's copy
        for the gateways is dropped). Local copies are dropped even if Redis is down."""
        self._entries.clear()
        with contextlib.suppress(RedisError, TimeoutError, OSError):
            async with asyncio.timeout(GENERATION_TIMEOUT * 4):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.incr(self._keys.blocks_generation)
                    if block_id is not None:
                        pipe.delete(self._keys.block_copy(block_id))
                    await pipe.execute()

    async def get(self, key: str, load: Callable[[], Awaitable[Any]]) -> Cached:
        generation = await self.generation()
        entry = self._entries.get(key)
        now = time.monotonic()
        if entry is not None:
            age = now - entry.loaded_at
            if generation is not None and entry.generation == generation and age < self._fresh:
                return Cached(entry.value, "hit", age)
            if generation is None and age < min(self._fresh, NO_REDIS_FRESH):
                return Cached(entry.value, "hit", age)
        reload = self._reloads.get(key)
        if reload is None:
            reload = asyncio.create_task(self._reload(key, load, generation))
            # Retrieved here: a reload whose waiters all took the stale copy may fail.
            reload.add_done_callback(lambda t: t.cancelled() or t.exception())
            self._reloads[key] = reload
        if entry is None or now - entry.loaded_at >= self._stale:
            value = await asyncio.shield(reload)
            return Cached(value, "miss", 0.0)
        try:
            async with asyncio.timeout(self._wait):
                value = await asyncio.shield(reload)
        except Exception as exc:  # timed out or failed: the bounded stale copy
            log.info("serving a stale copy of %s (%s)", key, type(exc).__name__)
            return Cached(entry.value, "stale", now - entry.loaded_at)
        return Cached(value, "miss", 0.0)

    async def _reload(self, key: str, load: Callable[[], Awaitable[Any]], gen: str | None) -> Any:
        try:
            value = await load()
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[key] = Entry(value, gen, time.monotonic())
            return value
        finally:
            self._reloads.pop(key, None)
