"""What handlers get from the lifespan: settings and clients, through app state."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from starlette.requests import Request

from services.api.block_cache import BlockCache
from shared.db import MongoGate, op_timeout
from shared.keys import Keys
from shared.redisconn import ping, redis_client
from shared.settings import Settings


def redis_timeout(settings: Settings) -> float:
    """Seconds a Redis call may take (REDIS_TIMEOUT_MS; a lobby read is one round trip)."""
    return settings.redis_timeout_ms / 1000


@dataclass(frozen=True, slots=True)
class Deps:
    settings: Settings
    mongo: MongoGate
    redis: Redis
    keys: Keys
    blocks: BlockCache

    @asynccontextmanager
    async def mongo_op(self) -> AsyncIterator[None]:
        """Beanie ready, then a bounded block of database work (raises → 503)."""
        await self.mongo.ensure()
        async with asyncio.timeout(op_timeout(self.settings)):
            yield

    async def redis_ping(self) -> None:
        async with asyncio.timeout(redis_timeout(self.settings)):
            await ping(self.redis)


def make_redis(settings: Settings) -> Redis:
    # One retry only: enough to survive a connection the server dropped while idle,
    # not enough to multiply the timeout when Redis is down.
    return redis_client(
        settings,
        decode_responses=True,
        socket_connect_timeout=redis_timeout(settings),
        socket_timeout=redis_timeout(settings),
        retry=Retry(NoBackoff(), 1),
        client_name="coderoom-api",
    )


def deps(request: Request) -> Deps:
    return cast(Deps, request.app.state.deps)


def settings_of(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)
