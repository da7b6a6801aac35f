"""The api's block cache: fresh until an admin write (on any replica), stale but bounded
when MongoDB is slow, one reload at a time; and the block copies left for the gateways."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
from redis.asyncio import Redis

from services.api.block_cache import BlockCache
from shared.db import decode_block_copy
from shared.keys import Keys
from tests.conftest import ClientFactory, SettingsFactory
from tests.infra import make_block


async def test_second_read_is_a_hit_and_an_admin_write_on_another_replica_refreshes(
    api_client_factory: ClientFactory, admin_headers: dict[str, str]
) -> None:
    a = await api_client_factory()
    b = await api_client_factory()  # a second replica: same Redis, same database
    first = await a.get("/api/code-blocks")
    assert first.status_code == 200
    again = await a.get("/api/code-blocks")
    assert again.headers["X-Cache"] == "hit"
    made = await b.post("/api/code-blocks", json=make_block(), headers=admin_headers)
    assert made.status_code == 201
    after = await a.get("/api/code-blocks")
    assert after.headers["X-Cache"] == "miss"
    assert made.json()["id"] in [x["id"] for x in after.json()]

    block_url = f"/api/code-blocks/{made.json()['id']}"
    assert (await a.get(block_url)).json()["title"] == "Sample block"
    assert (await a.get(block_url)).headers["X-Cache"] == "hit"
    patched = await b.patch(block_url, json={"title": "Renamed"}, headers=admin_headers)
    assert patched.status_code == 200
    assert (await a.get(block_url)).json()["title"] == "Renamed"
    deleted = await b.delete(block_url, headers=admin_headers)
    assert deleted.status_code == 204
    assert (await a.get(block_url)).status_code == 404
    assert made.json()["id"] not in [x["id"] for x in (await a.get("/api/code-blocks")).json()]


async def test_a_read_block_is_left_in_redis_for_the_gateways(
    api_client: httpx.AsyncClient,
    admin_headers: dict[str, str],
    redis_client: Redis,
    redis_prefix: str,
) -> None:
    body = make_block(template="T", solution="S")
    made = (await api_client.post("/api/code-blocks", json=body, headers=admin_headers)).json()
    key = Keys(redis_prefix).block_copy(made["id"])
    assert await redis_client.get(key) is None  # written by readers, not writers
    await api_client.get(f"/api/code-blocks/{made['id']}")
    assert decode_block_copy(await redis_client.get(key)) == (True, ("T", "S"))
    await api_client.patch(
        f"/api/code-blocks/{made['id']}", json={"solution": "S2"}, headers=admin_headers
    )
    assert await redis_client.get(key) is None  # an admin write drops the copy
    missing = "0" * 24
    assert (await api_client.get(f"/api/code-blocks/{missing}")).status_code == 404
    copy = await redis_client.get(Keys(redis_prefix).block_copy(missing))
    assert decode_block_copy(copy) == (True, None)


def cache(redis: Redis, settings_factory: SettingsFactory, **overrides: Any) -> BlockCache:
    settings = settings_factory(**overrides)
    return BlockCache(redis, Keys(settings.redis_prefix), settings)


async def test_slow_mongo_gets_the_stale_copy_with_its_age(
    redis_client: Redis, settings_factory: SettingsFactory
) -> None:
    blocks = cache(
        redis_client, settings_factory, block_list_fresh_seconds=0, block_list_wait_ms=50
    )
    calls = 0
    release = asyncio.Event()

    async def load() -> list[str]:
        nonlocal calls
        calls += 1
        if calls > 1:
            await release.wait()  # MongoDB is slow now
        return [f"v{calls}"]

    first = await blocks.get("list", load)
    assert (first.value, first.status) == (["v1"], "miss")
    stale = await asyncio.gather(*(blocks.get("list", load) for _ in range(20)))
    assert {(tuple(s.value), s.status) for s in stale} == {(("v1",), "stale")}
    assert stale[0].headers()["X-Cache"] == "stale"
    assert calls == 2  # one reload for twenty requests
    release.set()
    await asyncio.sleep(0.01)
    fresh = await blocks.get("list", lambda: asyncio.sleep(0, ["v3"]))
    assert fresh.value in (["v2"], ["v3"])


async def test_failing_mongo_gets_the_stale_copy_but_not_beyond_its_bound(
    redis_client: Redis, settings_factory: SettingsFactory
) -> None:
    blocks = cache(
        redis_client,
        settings_factory,
        block_list_fresh_seconds=0,
        block_list_stale_seconds=0.2,
        block_list_wait_ms=1000,
    )

    async def fails() -> list[str]:
        raise TimeoutError("MongoDB is away")

    async def works() -> list[str]:
        return ["ok"]

    await blocks.get("list", works)
    assert (await blocks.get("list", fails)).status == "stale"
    await asyncio.sleep(0.25)  # the copy is now older than BLOCK_LIST_STALE_SECONDS
    try:
        await blocks.get("list", fails)
    except TimeoutError:
        pass
    else:
        raise AssertionError("a copy older than the bound was served")


async def test_without_redis_a_copy_is_fresh_for_a_few_seconds(
    settings_factory: SettingsFactory,
) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.1)
    try:
        blocks = cache(dead, settings_factory)
        calls = 0

        async def load() -> int:
            nonlocal calls
            calls += 1
            return calls

        assert (await blocks.get("k", load)).status == "miss"
        assert (await blocks.get("k", load)).status == "hit"
        assert calls == 1
        await blocks.invalidate()  # Redis down: local copies still dropped
        assert (await blocks.get("k", load)).status == "miss"
    finally:
        await dead.aclose()
