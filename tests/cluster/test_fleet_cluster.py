"""The fleet on a real 3-primary/3-replica Redis Cluster (docs/cluster.md): rooms spread
over every shard with each room's traffic on its own shard, a primary SIGKILLed while
students type, a live room's slot migrated while students type, and a cluster that is
unreachable or does not cover every slot. Each load test prints what it measured."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services import devcluster
from shared.redisconn import slot_of
from tests.cluster.conftest import unready_services
from tests.fleet.classroom import Classroom
from tests.fleet.conftest import Blocks
from tests.infra import EmbeddedMongo, Fleet, ServiceProcess, free_port, scaled, wait_until
from tests.rediscluster import RedisClusterServers, move_slot
from tests.yclient import wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ENV = {
    "MENTOR_GRACE_SECONDS": 5,
    "HEARTBEAT_INTERVAL_SECONDS": 0.5,
    "GATEWAY_DEAD_AFTER_SECONDS": 2,
    "REDIS_TIMEOUT_MS": 1000,
}


def urls(fleet: Fleet) -> list[str]:
    return [g.ws_url + "/ws/rooms" for g in fleet.gateways]


def fleet_on(tmp: Path, cluster: RedisClusterServers, mongo: EmbeddedMongo) -> Fleet:
    return Fleet(tmp, gateways=2, redis=cluster, mongo=mongo, env=ENV)  # type: ignore[arg-type]


async def classroom(fleet: Fleet, rooms: int, students: int) -> Classroom:
    blocks = Blocks(fleet)
    ids = [blocks.new().id for _ in range(rooms)]
    room = Classroom(urls(fleet), ids, students)
    await room.start()
    return room


def command_calls(cluster: RedisClusterServers, port: int, command: str) -> int:
    with cluster.node_client(port) as node:
        stats = node.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


def cpu_seconds(cluster: RedisClusterServers, port: int) -> float:
    """A node's CPU time so far (INFO cpu: user + system of the main thread's process)."""
    with cluster.node_client(port) as node:
        cpu = node.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[RedisClusterServers]:
    """A cluster of the test's own: the test kills or moves its nodes."""
    with RedisClusterServers(tmp_path / "cluster", node_timeout_ms=1000) as cluster:
        yield cluster


async def test_rooms_spread_over_every_primary_and_each_room_stays_on_its_shard(
    tmp_path: Path, redis_cluster: RedisClusterServers, mongo: EmbeddedMongo
) -> None:
    with fleet_on(tmp_path, redis_cluster, mongo) as fleet:
        room = await classroom(fleet, rooms=30, students=1)
        before = {p: command_calls(redis_cluster, p, "spublish") for p in redis_cluster.primaries()}
        cpu_before = {p: cpu_seconds(redis_cluster, p) for p in redis_cluster.primaries()}
        room.start_typing(interval=0.2)
        await asyncio.sleep(1.5)
        edits = await room.stop_typing()
        await room.wait_converged(15)
        keys = fleet.keys
        owners: dict[int, list[str]] = {}
        for r in room.rooms:
            owners.setdefault(redis_cluster.primary_of(keys.room(r.block_id).state), []).append(
                r.block_id
            )
        primaries = redis_cluster.primaries()
        assert sorted(owners) == primaries  # every primary holds rooms
        for port in primaries:
            with redis_cluster.node_client(port) as node:
                for r in room.rooms:
                    here = r.block_id in owners[port]
                    # The room's state lives only on its owner ...
                    slot = slot_of(keys.room(r.block_id).state)
                    stored = node.execute_command("CLUSTER COUNTKEYSINSLOT", slot)
                    assert (stored > 0) == here
                    # ... and both gateways follow its channel only there (SSUBSCRIBE).
                    subscribed = dict(node.pubsub_shardnumsub(keys.room(r.block_id).channel))
                    assert subscribed[keys.room(r.block_id).channel] == (2 if here else 0)
        after = {p: command_calls(redis_cluster, p, "spublish") for p in primaries}
        cpu_ms = [round(1000 * (cpu_seconds(redis_cluster, p) - cpu_before[p])) for p in primaries]
        # Every shard carried its own rooms' messages; nothing used unsharded PUBLISH.
        assert all(after[p] > before[p] for p in primaries)
        assert all(command_calls(redis_cluster, p, "publish") == 0 for p in redis_cluster.ports)
        assert fleet.api is not None
        async with httpx.AsyncClient(timeout=scaled(5)) as http:
            lobby = (await http.get(fleet.api.url + "/api/rooms")).json()
        mine = {
            r["blockId"]: r
            for r in lobby["rooms"]
            if r["blockId"] in {x.block_id for x in room.rooms}
        }
        assert len(mine) == 30 and all(r["mentor"] and r["students"] == 1 for r in mine.values())
        print(
            f"\n30 rooms over {len(primaries)} primaries: "
            f"{sorted(len(v) for v in owners.values())} rooms each; {edits} edits; "
            f"spublish per primary {[after[p] - before[p] for p in primaries]}; "
            f"Redis CPU ms per primary {cpu_ms} (the load splits; a shared, loaded machine)"
        )
        await room.close()


async def test_failover_under_load_loses_no_edit(
    tmp_path: Path, fresh_cluster: RedisClusterServers, mongo: EmbeddedMongo
) -> None:
    cluster = fresh_cluster
    with fleet_on(tmp_path, cluster, mongo) as fleet:
        keys = fleet.keys
        # The victim holds the gateways' heartbeats and at least 2 of the 6+ busy rooms.
        victim = cluster.primary_of(keys.gateways)
        blocks = Blocks(fleet)
        ids: list[str] = []
        while (
            len(ids) < 6 or sum(cluster.primary_of(keys.room(b).state) == victim for b in ids) < 2
        ):
            ids.append(blocks.new().id)
        room = Classroom(urls(fleet), ids, 3)
        await room.start()
        busy = [r for r in room.rooms if cluster.primary_of(keys.room(r.block_id).state) == victim]
        room.start_typing(interval=0.2)
        await asyncio.sleep(1.5)
        killed = time.monotonic()
        cluster.node(victim).kill()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, lambda: wait_until(lambda: victim not in cluster.primaries(), 15, 0.1)
        )
        promoted = time.monotonic() - killed
        await asyncio.sleep(3.0)  # typing goes on through and after the failover
        edits = await room.stop_typing()
        took = await room.wait_converged(20)
        await wait_for(room.presence_ok, 15)
        counts = time.monotonic() - killed
        print(
            f"\nfailover: primary :{victim} (owner of {len(busy)} of {len(ids)} rooms and the "
            "heartbeats) SIGKILLed; "
            f"replica promoted after {promoted:.2f}s; {edits} edits, 0 lost, converged "
            f"{took:.2f}s after typing stopped; counts right {counts:.2f}s after the kill"
        )
        assert all(c.last("room-closed") is None for c in room.clients)
        assert all(r.mentor.role == "mentor" for r in room.rooms)
        # Nobody could heartbeat while the shard holding the heartbeats failed over: no
        # gateway takes the other for dead.
        assert not any("reaping gateway" in g.log_text() for g in fleet.gateways)

        # Both gateways follow the busy rooms' channels on the promoted replica.
        def subscribed(channel: str) -> bool:
            with cluster.node_client(cluster.primary_of(channel)) as node:
                return bool(dict(node.pubsub_shardnumsub(channel))[channel] == 2)

        def all_subscribed() -> bool:
            return all(subscribed(keys.room(r.block_id).channel) for r in busy)

        await loop.run_in_executor(None, wait_until, all_subscribed, 10)
        await room.close()


async def test_slot_migration_under_load(
    tmp_path: Path, fresh_cluster: RedisClusterServers, mongo: EmbeddedMongo
) -> None:
    cluster = fresh_cluster
    with fleet_on(tmp_path, cluster, mongo) as fleet:
        room = await classroom(fleet, rooms=3, students=3)
        moving = room.rooms[0]
        channel = fleet.keys.room(moving.block_id).channel
        slot = slot_of(channel)
        source = cluster.primary_of(channel)
        target = next(p for p in cluster.primaries() if p != source)
        room.start_typing(interval=0.2)
        await asyncio.sleep(1.0)
        started = time.monotonic()
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: move_slot(cluster, slot, target, lambda: time.sleep(0.5))
        )
        moved = time.monotonic() - started
        await asyncio.sleep(2.0)
        edits = await room.stop_typing()
        took = await room.wait_converged(20)
        with cluster.node_client(target) as node:
            assert node.exists(fleet.keys.room(moving.block_id).state)
            assert dict(node.pubsub_shardnumsub(channel))[channel] == 2  # subscriptions followed
        with cluster.node_client(source) as node:
            assert dict(node.pubsub_shardnumsub(channel))[channel] == 0
        print(
            f"\nslot {slot} of a live room moved :{source} -> :{target} in {moved:.2f}s "
            f"while students typed; {edits} edits, 0 lost, converged in {took:.2f}s"
        )
        assert all(c.last("room-closed") is None for c in room.clients)
        await room.close()


def test_a_cluster_that_is_down_or_not_covering_every_slot_fails_readiness(
    tmp_path: Path, mongo: EmbeddedMongo
) -> None:
    # Seeds that do not answer: the gateway and the api start, say why, and are not ready.
    dead = devcluster.node_ports(2, first=free_port() % 20000 + 20000)
    env = {
        **ENV,
        "REDIS_URL": f"redis://127.0.0.1:{dead[0]}/0",
        "REDIS_CLUSTER": "true",
        "REDIS_CLUSTER_NODES": f"127.0.0.1:{dead[1]}",
        "MONGODB_URL": mongo.url,
        "TOKEN_SECRET": "t" * 32,
    }
    with unready_services(env, tmp_path / "logs") as (gateway, _):
        wait_until(lambda: "no redis cluster seed answered" in gateway.log_text(), 10)
        assert f"127.0.0.1:{dead[1]}" in gateway.log_text()
        # Housekeeping says so too, once, though Redis was never reachable.
        wait_until(lambda: "housekeeping: redis unavailable" in gateway.log_text(), 10)
        time.sleep(scaled(1.5))  # more ticks fail, silently
        assert gateway.log_text().count("housekeeping: redis unavailable") == 1
    # A cluster whose shard lost its primary and its replica: slots not covered.
    with RedisClusterServers(tmp_path / "cluster", node_timeout_ms=1000) as cluster:
        env.update(cluster.extra_env)
        gateway = ServiceProcess("gateway", env, tmp_path / "logs2").start("/healthz")
        try:
            wait_until(lambda: gateway.get("/readyz").status_code == 200, 15)
            first = cluster.primaries()[0]
            replica = cluster.replicas_of(first)
            assert replica
            for port in [first, *replica]:
                cluster.node(port).kill()
            wait_until(lambda: gateway.get("/readyz").status_code == 503, 20)
            text = gateway.log_text
            wait_until(lambda: "cluster is down" in text() or "not covered" in text(), 20)
        finally:
            gateway.stop()
