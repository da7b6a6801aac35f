"""The archive's records are kept until a replica holds them (docs/redis.md, "Surviving a
failover"): a real primary and replica, in process. The failover itself, with a
gateway, is tests/fleet/test_archive_failover.py.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from services.gateway.archive import Archiver, Replicas
from services.gateway.archive_queue import ArchiveQueue, SessionRecord
from services.gateway.store import Closed
from services.gateway.ydoc import template_update
from shared.keys import Keys
from shared.redisconn import redis_client
from shared.settings import load_settings
from tests.infra import LOCALHOST, await_until, wait_until
from tests.redis_failover import RedisNode
from tests.rediscluster import RedisClusterServers


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RedisNode, RedisNode]]:
    tmp: Path = tmp_path_factory.mktemp("pair")
    primary = RedisNode(tmp / "primary").start()
    replica = RedisNode(tmp / "replica", "--replicaof", LOCALHOST, str(primary.port)).start()
    try:
        wait_until(lambda: replica.info()["master_link_status"] == "up", 20, message="link up")
        yield primary, replica
    finally:
        replica.stop()
        primary.stop()


@pytest.fixture
async def redis(pair: tuple[RedisNode, RedisNode]) -> AsyncIterator[Redis]:
    client = Redis.from_url(pair[0].url)
    yield client
    await client.aclose()


def closed(session: str) -> Closed:
    return Closed(session, 0, False, 1, "m", template_update("x"), [])


async def no_mongo() -> Any:
    raise AssertionError("MongoDB is not needed here")


async def sessions_in_queue(redis: Redis, keys: Keys) -> list[str]:
    entries: list[Any] = list(await redis.xrange(keys.archive_queue) or [])
    return [SessionRecord.decode(f[b"r"]).session_id for _, f in entries]


async def test_the_enqueue_waits_for_the_replica(redis: Redis, redis_prefix: str) -> None:
    queue = ArchiveQueue(redis, Keys(redis_prefix), max_len=100)
    assert await queue.connected_replicas() == 1
    archiver = Archiver(queue, no_mongo, write_timeout=1, wait_ms=1000)
    archiver.archive("a" * 24, closed("s1"), "mentor-left")
    await archiver.wait(10)
    assert await sessions_in_queue(redis, Keys(redis_prefix)) == ["s1"]  # confirmed at once


async def test_records_are_enqueued_again_until_a_replica_holds_them(
    pair: tuple[RedisNode, RedisNode], redis: Redis, redis_prefix: str
) -> None:
    keys = Keys(redis_prefix)
    queue = ArchiveQueue(redis, keys, max_len=100)
    archiver = Archiver(queue, no_mongo, write_timeout=1, wait_ms=200)
    replica = pair[1]
    replica.send_signal(signal.SIGSTOP)  # connected, but acknowledging nothing
    session = "s-" + uuid.uuid4().hex
    try:
        archiver.archive("b" * 24, closed(session), "mentor-left")
        await await_until(
            lambda: _copies(pair[0], keys, session) >= 2, message="the record enqueued again"
        )
    finally:
        replica.send_signal(signal.SIGCONT)
    await archiver.wait(10)
    assert not archiver._tasks, "the record was confirmed once the replica answered"
    # Every copy is the same session: MongoDB's unique index archives it once.
    assert set(await sessions_in_queue(redis, keys)) == {session}


def _copies(node: RedisNode, keys: Keys, session: str) -> int:
    client = node.client()
    try:
        entries = client.xrange(keys.archive_queue)
    finally:
        client.close()
    return [SessionRecord.decode(f["r"]).session_id for _, f in entries].count(session)


async def test_the_replicas_to_wait_for() -> None:
    asked: list[int] = []

    async def ask() -> int:
        asked.append(1)
        return 2

    assert await Replicas(0, ask).wanted() == 0
    assert await Replicas(3, ask).wanted() == 3
    assert asked == []
    auto = Replicas(-1, ask)
    assert (await auto.wanted(), await auto.wanted()) == (2, 2)
    assert len(asked) == 1  # cached
    auto.shortfall()
    assert await auto.wanted() == 2
    assert len(asked) == 2  # asked again after a shortfall


async def test_on_a_cluster_the_entries_are_confirmed_on_the_queues_own_node(
    redis_cluster: RedisClusterServers, redis_prefix: str
) -> None:
    """WAIT counts the writes of its own connection: on a cluster the entries and the WAIT
    go to the primary that owns the queue's slot, on one connection (a cluster client
    refused the pipelined EVALSHA and would send a keyless WAIT anywhere)."""
    settings = load_settings(redis_url=redis_cluster.url, redis_cluster=True)
    client = redis_client(settings)
    keys = Keys(redis_prefix)
    queue = ArchiveQueue(client, keys, max_len=100, url=redis_cluster.url)
    try:
        assert await queue.connected_replicas() == 1  # the owner's replica, not a sum
        archiver = Archiver(queue, no_mongo, write_timeout=1, wait_ms=1000)
        archiver.archive("c" * 24, closed("on-cluster"), "mentor-left")
        await archiver.wait(10)
        owner = redis_cluster.node_client(redis_cluster.primary_of(keys.archive_queue))
        entries = owner.xrange(keys.archive_queue)
        # Enqueued again while a fresh cluster's replica was still syncing: copies of the
        # one session (archived once), every one of them held by the replica.
        assert {SessionRecord.decode(f["r"].encode()).session_id for _, f in entries} == {
            "on-cluster"
        }
        replica = redis_cluster.node_client(
            redis_cluster.replicas_of(redis_cluster.primary_of(keys.archive_queue))[0]
        )
        pipe = replica.pipeline(transaction=False)  # a cluster replica reads after READONLY
        pipe.execute_command("READONLY")
        pipe.xlen(keys.archive_queue)
        assert pipe.execute()[1] == len(entries)  # confirmed: the replica holds them
    finally:
        await queue.forget_nodes()
        await client.aclose()
