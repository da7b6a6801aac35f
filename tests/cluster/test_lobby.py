"""The lobby's live room status (GET /api/rooms) on a Redis Cluster costs a bounded number
of round trips: SMEMBERS of the room set on one shard, then one pipeline per primary
(redis-py's cluster pipeline groups the HMGETs by node), never one per room
(docs/redis.md, "Fleet-wide keys")."""

from __future__ import annotations

from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode

from shared.keys import Keys
from tests.rediscluster import RedisClusterServers

pytestmark = [pytest.mark.fleet]


async def test_lobby_status_costs_one_pipeline_per_primary(
    redis_cluster: RedisClusterServers,
    api_client_factory: Any,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    keys = Keys(redis_prefix)
    rooms = [f"{i:024x}" for i in range(40)]
    with redis_cluster.client() as cluster:
        for block_id in rooms:
            cluster.sadd(keys.rooms, block_id)
            cluster.hset(
                keys.room(block_id).state,
                mapping={"session": "s", "n_mentor": 1, "n_student": 2, "n_watcher": 0},
            )
    owners = {redis_cluster.primary_of(keys.room(b).state) for b in rooms}
    assert len(owners) == 3
    client = await api_client_factory(redis_url=redis_cluster.url, redis_cluster=True)
    assert (await client.get("/api/rooms")).status_code == 200  # connections and map warm

    calls = {"pipelines": 0, "commands": 0}
    pipeline, command = ClusterNode.execute_pipeline, ClusterNode.execute_command

    async def counted_pipeline(self: ClusterNode, *args: Any) -> Any:
        calls["pipelines"] += 1
        return await pipeline(self, *args)

    async def counted_command(self: ClusterNode, *args: Any, **kwargs: Any) -> Any:
        calls["commands"] += 1
        return await command(self, *args, **kwargs)

    monkeypatch.setattr(ClusterNode, "execute_pipeline", counted_pipeline)
    monkeypatch.setattr(ClusterNode, "execute_command", counted_command)
    response = await client.get("/api/rooms")
    listed = [r for r in response.json()["rooms"] if r["blockId"] in rooms]
    assert len(listed) == 40 and all(r["students"] == 2 for r in listed)
    assert calls == {"pipelines": 3, "commands": 1}  # 1 + (number of primaries) round trips
