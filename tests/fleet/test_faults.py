"""Faults with real processes: a gateway killed or stopped, Redis restarted or its pub/sub
connection dropped, MongoDB gone. Each test prints what it measured."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from shared.protocol import CloseCode
from tests.fleet.classroom import Classroom
from tests.fleet.conftest import Blocks, engine_redis, fleet_env, own_fleet
from tests.infra import Fleet, scaled, scrape
from tests.yclient import RoomClient, close_all, join, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

FAULT_ENV = {
    "MENTOR_GRACE_SECONDS": 5,
    "HEARTBEAT_INTERVAL_SECONDS": 0.5,
    "GATEWAY_DEAD_AFTER_SECONDS": 2,
}


def urls(fleet: Fleet) -> list[str]:
    return [g.ws_url + "/ws/rooms" for g in fleet.gateways]


# The gateway faults (kill -9 and its reaping, SIGTERM) run on a single Redis and on the
# session's Redis Cluster (tests/fleet/conftest.py); the Redis faults are single-Redis.
ENGINES = ("single", "cluster")


@pytest.fixture
def fleet3(tmp_path: Path, request: pytest.FixtureRequest, engine: str) -> Iterator[Fleet]:
    redis = engine_redis(request, engine) if engine == "cluster" else None
    with Fleet(tmp_path, gateways=3, env=fleet_env(FAULT_ENV), redis=redis) as fleet:
        yield fleet


@pytest.fixture
def fleet2(tmp_path: Path) -> Iterator[Fleet]:
    with own_fleet(tmp_path, gateways=2, **FAULT_ENV) as fleet:
        yield fleet


async def classroom(fleet: Fleet, rooms: int, students: int) -> Classroom:
    blocks = Blocks(fleet)
    ids = [blocks.new().id for _ in range(rooms)]
    room = Classroom(urls(fleet), ids, students)
    await room.start()
    return room


async def test_kill_9_one_of_three_gateways_while_students_type(fleet3: Fleet) -> None:
    room = await classroom(fleet3, rooms=5, students=6)  # 30 students, 5 mentors
    victim = fleet3.gateways[1]
    on_victim = room.on(urls(fleet3)[1])
    room.start_typing(interval=0.25)
    await asyncio.sleep(1.5)
    killed = time.monotonic()
    victim.kill()
    await wait_for(lambda: all(c.connected and c.reconnects for c in on_victim), 10)
    reconnect_max = max(max(c.reconnects) for c in on_victim)
    # The latest welcome of each mentor, moved or not: still the mentor after a reconnect.
    assert all(r.mentor.role == "mentor" for r in room.rooms)
    moved_mentors = [r.mentor for r in room.rooms if r.mentor in on_victim]
    assert moved_mentors and all(m.count("welcome") >= 2 for m in moved_mentors)
    await asyncio.sleep(1.5)
    edits = await room.stop_typing()
    took = await room.wait_converged(15)
    await wait_for(room.presence_ok, 10)
    counts_after = time.monotonic() - killed
    print(
        f"\nkill -9: {len(on_victim)} clients moved, slowest reconnect {reconnect_max:.2f}s; "
        f"{edits} edits, all converged {took:.2f}s after typing stopped; "
        f"counts right {counts_after:.2f}s after the kill"
    )
    assert reconnect_max < scaled(5)
    assert counts_after < scaled(10 + 3)  # typing went on for 1.5 s after the reconnects
    assert all(r.mentor.role == "mentor" for r in room.rooms)
    assert all(c.last("room-closed") is None for c in room.clients)
    await room.close()


async def test_mentor_on_a_killed_gateway_closes_the_room_after_the_grace(fleet2: Fleet) -> None:
    blocks = Blocks(fleet2)
    block = blocks.new()
    g = urls(fleet2)
    mentor = await join(g[0], block.id)  # will not come back
    students = [await join(g[1], block.id) for _ in range(2)]
    await wait_for(
        lambda: all((s.last("presence") or {}).get("students") == 2 for s in students), 5
    )
    killed = time.monotonic()
    fleet2.gateways[0].kill()
    await wait_for(lambda: all(s.closed.is_set() for s in students), 20)
    took = time.monotonic() - killed
    print(f"\nmentor's gateway killed: room closed after {took:.2f}s (reap 2s + grace 5s)")
    assert all(s.close_code == CloseCode.ROOM_CLOSED for s in students)
    assert took >= 5
    await mentor.close()


async def test_sigterm_a_gateway_while_students_type(fleet3: Fleet) -> None:
    room = await classroom(fleet3, rooms=3, students=4)
    g = urls(fleet3)
    on_victim = room.on(g[0])
    room.start_typing(interval=0.2)
    await asyncio.sleep(1.0)
    stopped = time.monotonic()
    fleet3.gateways[0].stop(signal.SIGTERM, timeout=15)
    shutdown = time.monotonic() - stopped
    await wait_for(lambda: all(c.connected and c.reconnects for c in on_victim), 10)
    await asyncio.sleep(1.0)
    edits = await room.stop_typing()
    took = await room.wait_converged(15)
    print(
        f"\nSIGTERM: gateway exited in {shutdown:.2f}s; {len(on_victim)} clients moved "
        f"(close code {sorted({c.close_codes[0] or 0 for c in on_victim})}); {edits} edits, "
        f"0 lost, converged in {took:.2f}s"
    )
    assert {c.close_codes[0] for c in on_victim} == {CloseCode.SERVICE_RESTART}
    assert all(c.last("room-closed") is None for c in room.clients)
    await wait_for(room.presence_ok, 10)
    await room.close()


async def test_redis_restart_while_students_type(fleet2: Fleet) -> None:
    room = await classroom(fleet2, rooms=3, students=4)
    room.start_typing(interval=0.2)
    await asyncio.sleep(1.0)
    started = time.monotonic()
    fleet2.redis.restart()  # no persistence: Redis comes back empty
    down = time.monotonic() - started
    await asyncio.sleep(2.0)
    edits = await room.stop_typing()
    took = await room.wait_converged(20)
    await wait_for(room.presence_ok, 10)
    r = redis.Redis.from_url(fleet2.redis.url)
    for rm in room.rooms:
        members = r.hlen(fleet2.keys.room(rm.block_id).members)
        assert members == 1 + len(rm.students), "ghost or missing members"
    print(
        f"\nredis restart: down {down:.2f}s; {edits} edits; converged {took:.2f}s after "
        f"typing stopped; member counts exact"
    )
    # The rooms still work after the restart.
    rm = room.rooms[0]
    rm.students[0].type_at_end("<after>")
    await wait_for(lambda: all("<after>" in c.value for c in rm.clients), 5)
    await room.close()


def catchups(fleet: Fleet) -> list[tuple[float, float]]:
    """Each gateway's (room resyncs, room-log reads) so far."""
    scraped = [scrape(g.url) for g in fleet.gateways]
    return [
        (m["coderoom_gateway_resyncs_total"], m["coderoom_gateway_catchups_total"]) for m in scraped
    ]


async def test_pubsub_connection_dropped(fleet2: Fleet) -> None:
    room = await classroom(fleet2, rooms=3, students=4)
    before = catchups(fleet2)
    room.start_typing(interval=0.1)
    await asyncio.sleep(1.0)
    r = redis.Redis.from_url(fleet2.redis.url)
    killed = 0
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:  # keep it down for a while
        killed += int(r.execute_command("CLIENT", "KILL", "TYPE", "pubsub"))  # type: ignore[no-untyped-call]
        await asyncio.sleep(0.2)
    await asyncio.sleep(1.0)
    edits = await room.stop_typing()
    took = await room.wait_converged(15)
    after = catchups(fleet2)
    resyncs = [b[0] - a[0] for a, b in zip(before, after, strict=True)]
    read = [b[1] - a[1] for a, b in zip(before, after, strict=True)]
    print(
        f"\npub/sub dropped {killed} times over 2s: {edits} edits, converged {took:.2f}s after "
        f"typing stopped; per gateway: room resyncs {resyncs}, log catch-ups {read}"
    )
    assert killed >= 2
    # Every gateway serves every room here; each reconnect of its pub/sub connection
    # resyncs each room, and a resync ends reading the room's log for what it missed.
    assert all(r >= len(room.rooms) for r in resyncs), resyncs
    assert all(n >= r for n, r in zip(read, resyncs, strict=True)), (read, resyncs)
    await room.close()


async def test_mongo_down_rooms_keep_working_new_rooms_refused(fleet2: Fleet) -> None:
    blocks = Blocks(fleet2)
    open_block, closed_block = blocks.new(), blocks.new()
    g = urls(fleet2)
    mentor = await join(g[0], open_block.id)
    student = await join(g[1], open_block.id)
    fleet2.mongo.stop()
    try:
        student.type_at_end("<still working>")
        await wait_for(lambda: "<still working>" in mentor.value, 5)
        late = await join(g[0], open_block.id)  # cached block
        assert late.role == "student"
        started = time.monotonic()
        refused = await RoomClient(g[1], closed_block.id).connect(timeout=15)
        await wait_for(refused.closed.is_set, 15)
        took = time.monotonic() - started
        print(
            f"\nmongo down: a room that cannot load its block refused with "
            f"{refused.close_code} in {took:.2f}s; open rooms kept working"
        )
        assert refused.close_code == CloseCode.UNAVAILABLE
        assert took < scaled(8)
        await late.close()
    finally:
        fleet2.mongo.start()
    await close_all(mentor, student)
