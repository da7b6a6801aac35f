"""Blocks for room opens: one MongoDB read per block however many joins ask at once, none
when another gateway (or the api) left a copy in Redis, and a clear failure when
MongoDB is away. Real Redis, the embedded MongoDB, in process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from bson import ObjectId
from redis.asyncio import Redis

from services.gateway.blocks import Block, BlockSource, BlockUnavailable
from services.gateway.metrics import GatewayMetrics
from shared.db import MongoGate, connect_mongo, decode_block_copy, mongo_client
from shared.documents import CodeBlock
from shared.keys import Keys
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.infra import free_port, make_block


@pytest.fixture
async def settings(settings_factory: SettingsFactory) -> Settings:
    return settings_factory()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def gate(settings: Settings) -> AsyncIterator[MongoGate]:
    client = await connect_mongo(settings)
    gate = MongoGate(client, settings)
    await gate.ensure()
    yield gate
    await gate.aclose()
    await client.close()


async def make_blocks(n: int) -> list[CodeBlock]:
    docs = [CodeBlock(**make_block(template=f"t{i}", solution=f"s{i}")) for i in range(n)]
    for doc in docs:
        await doc.insert()
    return docs


async def test_a_burst_of_joins_reads_each_block_once_fleet_wide(
    gate: MongoGate, redis: Redis, settings: Settings
) -> None:
    docs = await make_blocks(30)
    keys = Keys(settings.redis_prefix)
    first, second = GatewayMetrics(), GatewayMetrics()
    a = BlockSource(gate, redis, keys, settings, first)
    ids = [str(d.id) for d in docs]
    got = await asyncio.gather(*(a.get(ids[i % 30]) for i in range(300)))
    assert got[:30] == [Block(str(d.id), d.template, d.solution) for d in docs]
    assert first.block_mongo_reads == 30
    b = BlockSource(gate, redis, keys, settings, second)  # another gateway
    assert await asyncio.gather(*(b.get(i) for i in ids)) == got[:30]
    assert second.block_mongo_reads == 0
    assert decode_block_copy(await redis.get(keys.block_copy(ids[0]))) == (True, ("t0", "s0"))


async def test_two_gateways_opening_the_same_rooms_at_once_read_each_block_once(
    gate: MongoGate, redis: Redis, settings: Settings
) -> None:
    docs = await make_blocks(60)
    keys = Keys(settings.redis_prefix)
    ids = [str(d.id) for d in docs]
    first, second = GatewayMetrics(), GatewayMetrics()
    a = BlockSource(gate, redis, keys, settings, first, "gw-a")
    b = BlockSource(gate, redis, keys, settings, second, "gw-b")
    got = await asyncio.gather(*(s.get(i) for i in ids for s in (a, b)))
    assert got == [Block(str(d.id), d.template, d.solution) for d in docs for _ in "ab"]
    assert first.block_mongo_reads + second.block_mongo_reads == 60
    assert not await redis.exists(*(keys.block_load_lock(i) for i in ids))


async def test_a_load_lock_nobody_honours_is_waited_out(
    gate: MongoGate, redis: Redis, settings: Settings
) -> None:
    docs = await make_blocks(2)
    keys = Keys(settings.redis_prefix)
    dead, gone = str(docs[0].id), str(docs[1].id)
    await redis.set(keys.block_load_lock(dead), "dead-gateway", px=300)  # it died reading
    await redis.set(keys.block_load_lock(gone), "failed-gateway")  # deleted below: it failed
    metrics = GatewayMetrics()
    source = BlockSource(gate, redis, keys, settings, metrics, "gw-a")
    task = asyncio.gather(source.get(dead), source.get(gone))
    await asyncio.sleep(0.1)
    await redis.delete(keys.block_load_lock(gone))
    assert list(await task) == [Block(dead, "t0", "s0"), Block(gone, "t1", "s1")]
    assert metrics.block_mongo_reads == 2


async def test_unknown_and_malformed_ids(gate: MongoGate, redis: Redis, settings: Settings) -> None:
    keys = Keys(settings.redis_prefix)
    metrics = GatewayMetrics()
    source = BlockSource(gate, redis, keys, settings, metrics)
    unknown = str(ObjectId())
    assert await source.get(unknown) is None
    assert await source.get("not-an-id") is None
    assert await source.get("A" * 24) is None  # ids are lower-case hex only
    assert metrics.block_mongo_reads == 1
    assert decode_block_copy(await redis.get(keys.block_copy(unknown))) == (True, None)
    await redis.set(keys.block_copy(unknown), b"garbage")
    other = BlockSource(gate, redis, keys, settings, GatewayMetrics())
    assert await other.get(unknown) is None  # a bad copy is ignored: MongoDB is asked


class CountingSource(BlockSource):
    queries = 0

    async def _from_mongo(self, ids: list[str]) -> dict[str, Block | None]:
        self.queries += 1
        return await super()._from_mongo(ids)


async def test_mongo_away_fails_every_waiting_join_at_once(
    redis: Redis, settings_factory: SettingsFactory
) -> None:
    dead = f"mongodb://127.0.0.1:{free_port()}/?directConnection=true"
    settings = settings_factory(mongodb_url=dead, mongodb_timeout_ms=300)
    client = mongo_client(settings)
    gate = MongoGate(client, settings)
    try:
        source = CountingSource(gate, redis, Keys(settings.redis_prefix), settings)
        ids = [str(ObjectId()) for _ in range(120)]
        results: list[Any] = await asyncio.gather(
            *(source.get(i) for i in ids), return_exceptions=True
        )
        assert all(isinstance(r, BlockUnavailable) for r in results)
        assert source.queries == 1  # not one timeout per query of 50, one after another
    finally:
        # pymongo 4.20.1 leaks the socket of a server check cancelled mid-connect (its
        # _async_create_connection closes it on OSError, not on cancellation), and the
        # failed queries just asked for a check: let it fail before closing the client.
        await asyncio.sleep(0.2)
        await gate.aclose()
        await client.close()
