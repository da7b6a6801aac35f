"""The gateway's hot path on a real Redis Cluster: the slot map, the shard router (one
pipelined connection per primary; MOVED, ASK) and the per-primary sharded subscriber
(SSUBSCRIBE on the owner, re-subscribing when a slot moves), plus the clear errors of a
cluster that is down or does not cover every slot (docs/cluster.md)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from services.gateway.relay import Relay, Subscriptions
from services.gateway.resp import Endpoint, encode_command
from services.gateway.shards import ShardRouter
from shared.redisconn import (
    ClusterUnavailable,
    hot_path,
    parse_cluster_shards,
    redis_client,
    slot_of,
)
from shared.settings import load_settings
from tests.infra import await_until, scaled, unique_name
from tests.rediscluster import RedisClusterServers, move_slot

pytestmark = [pytest.mark.fleet]


def _settings(cluster: RedisClusterServers, **more: Any) -> Any:
    return load_settings(redis_url=cluster.url, redis_cluster=True, **more)


def _router(cluster: RedisClusterServers) -> ShardRouter:
    settings = _settings(cluster)
    return ShardRouter(Endpoint.from_url(cluster.url), hot_path(settings), scaled(5))


async def _send(router: ShardRouter, key: str, *command: str | bytes | int) -> Any:
    reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    router.send(key, encode_command(*command), reply.set_result)
    return await asyncio.wait_for(reply, scaled(5))


async def test_the_slot_map_covers_every_slot_with_three_primaries(
    redis_cluster: RedisClusterServers,
) -> None:
    slot_map = await hot_path(_settings(redis_cluster)).load_map()
    assert slot_map.uncovered == 0
    assert sorted(node[1] for node in slot_map.primaries if node) == redis_cluster.primaries()


async def test_each_key_is_written_on_the_primary_that_owns_its_slot(
    redis_cluster: RedisClusterServers,
) -> None:
    router = _router(redis_cluster)
    prefix = unique_name("r")
    keys = [f"{prefix}:{{room:{i}}}:state" for i in range(30)]
    try:
        await router.connect()
        replies = await asyncio.gather(*(_send(router, k, "SET", k, "v") for k in keys))
        assert all(r == b"OK" for r in replies), replies
        owners = {redis_cluster.primary_of(k) for k in keys}
        assert len(owners) == 3  # 30 rooms spread over every primary
        for key in keys:  # without any redirection: each went straight to its owner
            with redis_cluster.node_client(redis_cluster.primary_of(key)) as node:
                assert node.get(key) == "v"
        assert router.redirects == 0
    finally:
        router.close()


async def test_a_moved_slot_is_followed_and_an_ask_is_answered(
    own_cluster: RedisClusterServers,
) -> None:
    router = _router(own_cluster)
    key = f"{unique_name('m')}:{{room:moved}}:state"
    slot = slot_of(key)
    try:
        await router.connect()
        assert await _send(router, key, "SET", key, "1") == b"OK"
        source = own_cluster.primary_of(key)
        target = next(p for p in own_cluster.primaries() if p != source)
        other = f"{unique_name('m')}:{{room:moved}}:log"  # same slot, not on the source yet

        async def while_half_migrated() -> None:
            # The key is not on the source: the source answers ASK, the router sends
            # ASKING + the command to the importing node.
            assert await _send(router, other, "SET", other, "asked") == b"OK"

        loop = asyncio.get_running_loop()
        half: list[Any] = []
        await loop.run_in_executor(
            None,
            lambda: move_slot(
                own_cluster,
                slot,
                target,
                lambda: half.append(
                    asyncio.run_coroutine_threadsafe(while_half_migrated(), loop).result(scaled(10))
                ),
            ),
        )
        assert router.redirects >= 1  # the ASK
        with own_cluster.node_client(target) as node:
            assert node.get(other) == "asked"
        # The map still names the source: MOVED, followed, and the map refreshed.
        assert await _send(router, key, "GET", key) == b"1"
        assert router.redirects >= 2
        await await_until(
            lambda: router._map is not None and router._map.owner(slot) == ("127.0.0.1", target),
            5,
            message="map refreshed",
        )
    finally:
        router.close()


async def test_tryagain_while_a_room_s_keys_are_split_is_resent_until_the_move_ends(
    own_cluster: RedisClusterServers,
) -> None:
    """A script touching two keys of a slot whose keys are half migrated gets TRYAGAIN;
    the router resends after a jittered delay, then follows the MOVED once the slot has
    moved, and the script runs once, on the new owner."""
    router = _router(own_cluster)
    tag = f"{{room:{unique_name('t')}}}"
    state, log = f"{tag}:state", f"{tag}:log"
    slot = slot_of(state)
    script = "redis.call('INCR', KEYS[1]) return redis.call('GET', KEYS[2])"
    try:
        await router.connect()
        await _send(router, state, "SET", state, "0")
        await _send(router, log, "SET", log, "entries")
        source = own_cluster.primary_of(state)
        target = next(p for p in own_cluster.primaries() if p != source)
        release = asyncio.Event()
        loop = asyncio.get_running_loop()

        def half_migrated() -> None:
            with own_cluster.node_client(source) as src:
                src.execute_command("MIGRATE", "127.0.0.1", target, log, 0, 5000)
            loop.call_soon_threadsafe(release.set)
            time.sleep(0.3)  # the router keeps getting TRYAGAIN meanwhile

        mover = loop.run_in_executor(None, move_slot, own_cluster, slot, target, half_migrated)
        await release.wait()
        reply = await _send(router, state, "EVAL", script, 2, state, log)
        await mover
        assert reply == b"entries"
        assert router.redirects >= 2  # TRYAGAIN at least once, then MOVED
        with own_cluster.node_client(target) as node:
            assert node.get(state) == "1"  # ran exactly once
    finally:
        router.close()


async def test_the_subscriber_follows_a_channel_whose_slot_moves(
    own_cluster: RedisClusterServers,
) -> None:
    settings = _settings(own_cluster)
    channel = f"{unique_name('s')}:{{room:sub}}:ch"
    slot = slot_of(channel)
    messages: list[tuple[str, bytes]] = []
    resubscribed: list[set[str]] = []

    async def on_reconnect(channels: set[str], suspect: set[str]) -> None:
        assert not suspect
        resubscribed.append(channels)

    subscriptions = Subscriptions()
    relay = Relay(
        Endpoint.from_url(own_cluster.url),
        hot_path(settings),
        f"{unique_name('s')}:relay:hello",
        subscriptions,
        lambda ch, data: messages.append((ch, data)),
        on_reconnect,
        scaled(5),
    )
    relay.start()
    try:
        await await_until(lambda: relay.healthy, 10, message="relay connected")
        subscriptions.subscribe(channel)
        source = own_cluster.primary_of(channel)
        with own_cluster.node_client(source) as node:
            await await_until(
                lambda: dict(node.pubsub_shardnumsub(channel)).get(channel) == 1,
                5,
                message="ssubscribed on the owner",
            )
            node.execute_command("SPUBLISH", channel, "before")
        await await_until(lambda: messages == [(channel, b"before")], 5, message="message")
        target = next(p for p in own_cluster.primaries() if p != source)
        await asyncio.get_running_loop().run_in_executor(None, move_slot, own_cluster, slot, target)
        # The old owner ends the subscription (sunsubscribe); the relay subscribes on the
        # new owner and asks the room to catch up from its log.
        await await_until(lambda: resubscribed == [{channel}], 10, message="resubscribed")
        with own_cluster.node_client(target) as node:
            await await_until(
                lambda: dict(node.pubsub_shardnumsub(channel)).get(channel) == 1,
                5,
                message="ssubscribed on the new owner",
            )
            node.execute_command("SPUBLISH", channel, "after")
        await await_until(lambda: len(messages) == 2, 5, message="message after the move")
        assert messages[1] == (channel, b"after")
    finally:
        await relay.stop()


async def test_an_authenticated_cluster_in_every_path(tmp_path: Path) -> None:
    """AUTH on every node: the cold client, the router and the subscriber all log in with
    REDIS_URL's password at every node the slot map names; scripts publish sharded."""
    with RedisClusterServers(tmp_path / "auth", password="s3cret-pw") as cluster:
        settings = _settings(cluster)
        assert settings.redis_url.startswith("redis://:s3cret-pw@")
        cold = redis_client(settings)
        router = ShardRouter(Endpoint.from_url(cluster.url), hot_path(settings), scaled(5))
        channel = f"{unique_name('a')}:{{room:auth}}:ch"
        messages: list[tuple[str, bytes]] = []

        async def on_reconnect(channels: set[str], suspect: set[str]) -> None:
            pass

        subscriptions = Subscriptions()
        relay = Relay(
            Endpoint.from_url(cluster.url),
            hot_path(settings),
            f"{unique_name('a')}:relay:hello",
            subscriptions,
            lambda ch, data: messages.append((ch, data)),
            on_reconnect,
            scaled(5),
        )
        relay.start()
        try:
            await router.connect()
            keys = [f"a:{{room:{i}}}:state" for i in range(12)]
            assert all(
                r == b"OK"
                for r in await asyncio.gather(*(_send(router, k, "SET", k, "1") for k in keys))
            )
            assert [await cold.get(k) for k in keys] == [b"1"] * 12
            await await_until(lambda: relay.healthy, 10, message="relay connected")
            subscriptions.subscribe(channel)
            script = cold.register_script("redis.call('PUBLISH', KEYS[1], ARGV[1]) return 1")
            await await_until(
                lambda: (
                    dict(
                        cluster.node_client(cluster.primary_of(channel)).pubsub_shardnumsub(channel)
                    )[channel]
                    == 1
                ),
                5,
                message="subscribed",
            )
            await script(keys=[channel], args=[b"hi"])
            await await_until(lambda: messages == [(channel, b"hi")], 5, message="sharded message")
        finally:
            await relay.stop()
            router.close()
            await cold.aclose()


async def test_seeds_that_do_not_answer_give_a_clear_error_naming_them() -> None:
    from tests.infra import free_port

    ports = [free_port(), free_port()]
    settings = load_settings(
        redis_url=f"redis://127.0.0.1:{ports[0]}/0",
        redis_cluster=True,
        redis_cluster_nodes=f"127.0.0.1:{ports[1]}",
        redis_timeout_ms=500,
    )
    with pytest.raises(ClusterUnavailable) as caught:
        await asyncio.wait_for(hot_path(settings).load_map(), scaled(5))
    message = str(caught.value)
    assert "no redis cluster seed answered" in message
    assert all(f"127.0.0.1:{p}" in message for p in ports)


def test_a_shard_without_a_live_primary_leaves_its_slots_uncovered() -> None:
    def node(port: int, role: str, health: str) -> dict[bytes, Any]:
        return {
            b"ip": b"127.0.0.1",
            b"port": port,
            b"role": role.encode(),
            b"health": health.encode(),
        }

    reply = [
        {
            b"slots": [0, 8191],
            b"nodes": [node(1, "master", "online"), node(2, "replica", "online")],
        },
        {
            b"slots": [8192, 16383],
            b"nodes": [node(3, "master", "fail"), node(4, "replica", "online")],
        },
    ]
    slot_map = parse_cluster_shards(reply)
    assert slot_map.uncovered == 8192
    assert slot_map.owner(5) == ("127.0.0.1", 1)
    with pytest.raises(ClusterUnavailable, match="slot 9000 is not covered"):
        slot_map.owner(9000)
