"""The heartbeat is its own loop (services/gateway/housekeeping.py): a housekeeping tick
that takes longer than GATEWAY_DEAD_AFTER_SECONDS (a repair waiting out a restarted
primary, a reap of many rooms) must not let the gateway's heartbeat lapse, or the other
gateways reap a gateway that is alive. Against a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from services.gateway.housekeeping import Housekeeper
from services.gateway.metrics import GatewayMetrics
from shared.keys import Keys
from tests.infra import RedisServer, scaled, unique_name

INTERVAL = 0.1


class SlowTicks(Housekeeper):
    """Each housekeeping tick takes ``slow`` seconds (the heartbeat is not a tick's job)."""

    slow = 1.0
    ticks = 0

    async def tick(self) -> None:
        self.ticks += 1
        await asyncio.sleep(self.slow)


class Marks:
    """What a tick asks of Resync, counted (this gateway serves no room here)."""

    def __init__(self) -> None:
        self.calls = 0

    async def mark_unregistered(self) -> int:
        self.calls += 1
        return 0

    async def resync_pending(self) -> None:
        pass

    async def check_rooms(self) -> None:
        pass


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def housekeeper(redis: Redis, keys: Keys, marks: Marks, cls: type = SlowTicks) -> Any:
    unused: Any = None  # store, closer: not reached by the heartbeat or these ticks
    return cls(
        "gw-test",
        redis,
        keys,
        unused,
        marks,
        unused,
        GatewayMetrics(),
        interval=INTERVAL,
        dead_after=0.5,
    )


async def test_the_heartbeat_goes_on_while_a_tick_is_slow(redis: Redis) -> None:
    keys = Keys(unique_name("hb"))
    hk = housekeeper(redis, keys, Marks())
    hk.slow = scaled(3.0)
    hk.start()
    try:
        scores = []
        started = time.monotonic()
        while time.monotonic() - started < scaled(1.0):  # within the first, slow tick
            scores.append(await redis.zscore(keys.gateways, "gw-test"))
            await asyncio.sleep(INTERVAL)
        assert hk.ticks == 1
        beats = {s for s in scores if s is not None}
        assert len(beats) >= 5, scores  # fresh every interval, not once per tick
        assert time.time() * 1000 - max(beats) < scaled(0.5) * 1000
    finally:
        await hk.stop()
    assert await redis.zscore(keys.gateways, "gw-test") is None  # deregistered


async def test_a_heartbeat_that_finds_itself_gone_has_the_members_checked(
    redis: Redis,
) -> None:
    keys = Keys(unique_name("hb"))
    marks = Marks()
    hk = housekeeper(redis, keys, marks, Housekeeper)  # real ticks, on a real Redis
    await hk.heartbeat()  # the first beat adds the entry: nothing to repair
    await hk.tick()
    await hk.heartbeat()
    await hk.tick()
    assert marks.calls == 0
    await redis.zrem(keys.gateways, "gw-test")  # reaped by another gateway
    await hk.heartbeat()
    await hk.tick()
    assert marks.calls == 1  # once, at the next tick
    await hk.heartbeat()
    await hk.tick()
    assert marks.calls == 1
