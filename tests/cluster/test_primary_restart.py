"""A cluster primary that restarts empty (no replica, no persistence: docs/cluster.md,
"A primary that restarts empty"): its rooms come back from the gateways' memory, the
fleet-wide keys it held (the lobby's set of open rooms) are written again, and the rooms
of the other shards are left alone."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.fleet.classroom import Classroom
from tests.fleet.conftest import Blocks
from tests.infra import EmbeddedMongo, Fleet, scaled, scrape
from tests.rediscluster import RedisClusterServers
from tests.yclient import wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

ENV = {
    "MENTOR_GRACE_SECONDS": 5,
    "HEARTBEAT_INTERVAL_SECONDS": 0.5,
    "GATEWAY_DEAD_AFTER_SECONDS": 2,
    "REDIS_TIMEOUT_MS": 1000,
}
ROOMS = 30
RESTART_LINE = re.compile(r"redis (\S+) restarted empty.*resyncing (\d+) of (\d+) rooms")


@pytest.fixture
def lone_primaries(tmp_path: Path) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path / "cluster", node_timeout_ms=1000)
    cluster.start_without_replicas()
    try:
        yield cluster
    finally:
        cluster.stop()


async def poll(predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``predicate()`` (run in a thread: it asks Redis) is true."""
    started = time.monotonic()
    deadline = started + scaled(timeout)
    loop = asyncio.get_running_loop()

    def asked() -> bool:
        try:
            return predicate()
        except redis.RedisError:  # the restarted node says CLUSTERDOWN for a while
            return False

    while not await loop.run_in_executor(None, asked):
        if time.monotonic() > deadline:
            raise AssertionError(f"{predicate.__name__} not true within {timeout}s")
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_a_primary_restarting_empty_gets_its_rooms_back(
    tmp_path: Path, lone_primaries: RedisClusterServers, mongo: EmbeddedMongo
) -> None:
    cluster = lone_primaries
    fleet = Fleet(tmp_path, gateways=2, redis=cluster, mongo=mongo, env=ENV)  # type: ignore[arg-type]
    with fleet:
        keys = fleet.keys
        blocks = Blocks(fleet)
        ids = [blocks.new().id for _ in range(ROOMS)]
        urls = [g.ws_url + "/ws/rooms" for g in fleet.gateways]
        room = Classroom(urls, ids, students=1)  # mentor and student on different gateways
        await room.start()
        owner = {b: cluster.primary_of(keys.room(b).state) for b in ids}
        assert sorted(set(owner.values())) == cluster.primaries()  # rooms on every shard
        # The victim also holds the lobby's set of open rooms: every room must come back
        # there, not only its own.
        victim = cluster.primary_of(keys.rooms)
        on_victim = {b for b in ids if owner[b] == victim}
        before = [scrape(g.url)["coderoom_gateway_resyncs_total"] for g in fleet.gateways]
        with cluster.node_client(victim) as node:
            assert node.exists(keys.rooms)

        killed = time.monotonic()
        cluster.restart(victim)
        back = time.monotonic() - killed
        with cluster.node_client(victim) as node:
            assert node.dbsize() == 0 or not node.exists(keys.rooms)  # it came back empty

        def states_back() -> bool:
            with cluster.node_client(victim) as node:
                for b in on_victim:
                    k = keys.room(b)
                    state = node.hmget(k.state, "session", "n_mentor", "n_student")
                    if state[0] is None or state[1:] != ["1", "1"] or node.hlen(k.members) != 2:
                        return False
            return True

        restored = await poll(states_back, 15) + back

        async def lobby_live() -> dict[str, tuple[bool, int]]:
            assert fleet.api is not None
            async with httpx.AsyncClient(timeout=scaled(5)) as http:
                rooms = (await http.get(fleet.api.url + "/api/rooms")).json()["rooms"]
            return {r["blockId"]: (r["mentor"], r["students"]) for r in rooms}

        async def lobby_wrong() -> set[str]:
            live = await lobby_live()
            return {b for b in ids if live.get(b) != (True, 1)}

        started = time.monotonic()
        while wrong := await lobby_wrong():
            if time.monotonic() - started > scaled(10):
                raise AssertionError(
                    f"the lobby misses {len(wrong)} rooms, {len(wrong & on_victim)} of them "
                    f"on the restarted primary (of {len(on_victim)})"
                )
            await asyncio.sleep(0.1)
        lobby = time.monotonic() - killed

        # An edit typed after the restart reaches every client of every room.
        for r in room.rooms:
            r.students[0].type_at_end("<after>")
        await wait_for(lambda: all("<after>" in c.value for c in room.clients), 10)
        assert all(c.last("room-closed") is None for c in room.clients)

        # Each gateway resynced the restarted shard's rooms, and only those.
        resynced = []
        for gateway in fleet.gateways:
            found = RESTART_LINE.findall(gateway.log_text())
            assert found, f"{gateway.name}: no restart noticed"
            address, count, served = found[-1]
            assert address.endswith(f":{victim}")
            assert (int(count), int(served)) == (len(on_victim), ROOMS)
            resynced.append(int(count))
        after = [scrape(g.url)["coderoom_gateway_resyncs_total"] for g in fleet.gateways]
        total = [round(a - b) for a, b in zip(after, before, strict=True)]
        # The subscriber and housekeeping both resync the victim's rooms (idempotent);
        # a resync of every room would reach ROOMS on its own.
        assert all(t < ROOMS for t in total), total
        print(
            f"\nprimary :{victim} (of {cluster.primaries()}) restarted empty, back after "
            f"{back:.2f}s: its {len(on_victim)} of {ROOMS} rooms' state and members back "
            f"{restored:.2f}s after the kill, lobby right for all {ROOMS} after {lobby:.2f}s; "
            f"housekeeping resynced {resynced} rooms per gateway; resyncs in all (subscriber "
            f"+ housekeeping) {total}"
        )
        await room.close()
