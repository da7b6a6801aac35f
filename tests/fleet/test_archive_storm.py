"""A class ends all at once (issue 19): no archived session lost, the lobby keeps working.

Real processes: two gateways, the api, Redis and an embedded MongoDB of this module's
own (the tests stop it). Rooms are a mentor and one typing student each, as raw sockets
(tests/fleet/storm.py). Each test prints its figures (-s); the assertions are about
what happened (archived exactly once, no refusal, the lobby answering), not about time.
``CODEROOM_STORM_ROOMS`` (default 1000) and ``CODEROOM_OUTAGE_SECONDS`` (default 60)
size the storms.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Iterator

import pytest

from shared import protocol
from tests.fleet.storm import (
    JoinResult,
    LobbyProbe,
    StormBlock,
    archived,
    check_archive,
    insert_blocks,
    join_all,
    queue_info,
    room_states,
    typed_update,
)
from tests.infra import Fleet, RedisServer, await_until, scrape

pytestmark = [pytest.mark.fleet, pytest.mark.slow, pytest.mark.timeout(900)]

ROOMS = int(os.environ.get("CODEROOM_STORM_ROOMS") or "1000")
OUTAGE = float(os.environ.get("CODEROOM_OUTAGE_SECONDS") or "60")
CLAIM_IDLE = 3.0


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@pytest.fixture(scope="module")
def storm_fleet(
    tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer
) -> Iterator[Fleet]:
    fleet = Fleet(
        tmp_path_factory.mktemp("storm"),
        gateways=2,
        redis=redis_server,  # MongoDB is the fleet's own: these tests stop it
        env={
            "MENTOR_GRACE_SECONDS": 1.0,
            "HEARTBEAT_INTERVAL_SECONDS": 0.5,
            "GATEWAY_DEAD_AFTER_SECONDS": 15.0,  # a gateway busy with a storm is not dead
            "MAX_CONNECTIONS_PER_IP": 0,  # every client comes from 127.0.0.1
            "ARCHIVE_CLAIM_IDLE_SECONDS": CLAIM_IDLE,
        },
    )
    with fleet:
        yield fleet


async def open_class(fleet: Fleet, blocks: list[StormBlock]) -> tuple[JoinResult, JoinResult]:
    """Every mentor at once (rooms spread over both gateways), then every student at
    once on the other gateway; each student types once; waits until every update is
    in its room's log and every room meant to be solved is."""
    urls = [g.ws_url for g in fleet.gateways]
    mentors = await join_all([(urls[i % 2], b.id) for i, b in enumerate(blocks)])
    say(f"{len(blocks)} mentors at once: {mentors.summary()}")
    assert mentors.refused == {}, mentors.refused
    assert all(m.role == "mentor" for m in mentors.members)
    students = await join_all([(urls[(i + 1) % 2], b.id) for i, b in enumerate(blocks)])
    say(f"{len(blocks)} students at once: {students.summary()}")
    assert students.refused == {}, students.refused
    assert all(s.role == "student" for s in students.members)
    for student, block in zip(students.members, blocks, strict=True):
        await student.sock.send(protocol.sync_update(typed_update(block)))
    await await_until(
        lambda: all(s is not None and int(s) >= 1 for s in room_states(fleet, blocks, "seq")),
        within=60,
        interval=0.5,
        message="every student's update in its room log",
    )
    solved = [b for b in blocks if b.solved]
    await await_until(
        lambda: all(s == "1" for s in room_states(fleet, solved, "solved")),
        within=60,
        interval=0.5,
        message="solved rooms flagged",
    )
    return mentors, students


def leave_all(*groups: JoinResult) -> None:
    for group in groups:
        for member in group.members:
            member.leave()


async def all_archived(fleet: Fleet, blocks: list[StormBlock], within: float) -> float:
    """Waits until every block has an archived session; seconds it took."""
    started = time.monotonic()
    await await_until(
        lambda: len(archived(fleet, blocks)) >= len(blocks),
        within=within,
        interval=0.5,
        message=f"{len(blocks)} sessions archived",
    )
    return time.monotonic() - started


async def test_a_class_of_1000_rooms_opens_and_ends_at_once(storm_fleet: Fleet) -> None:
    fleet = storm_fleet
    assert fleet.api is not None
    blocks = await asyncio.to_thread(insert_blocks, fleet, ROOMS)
    reads_before = sum(
        scrape(g.url).get("coderoom_gateway_block_mongo_reads_total", 0.0) for g in fleet.gateways
    )
    mentors, students = await open_class(fleet, blocks)
    reads = (
        sum(
            scrape(g.url).get("coderoom_gateway_block_mongo_reads_total", 0.0)
            for g in fleet.gateways
        )
        - reads_before
    )
    say(f"opening {ROOMS} rooms on cold caches read {reads:.0f} blocks from MongoDB")
    assert reads <= ROOMS  # at most one MongoDB read per block, fleet-wide

    probe = LobbyProbe(fleet.api.url).start()
    left = time.monotonic()
    leave_all(mentors, students)
    try:
        took = await all_archived(fleet, blocks, within=300)
    finally:
        await probe.stop()
    docs = archived(fleet, blocks)
    check_archive(blocks, docs)
    ended = sorted(d["ended_at"] for d in docs)
    say(
        f"{ROOMS} rooms left at once: last session archived {time.monotonic() - left:.1f}s "
        f"after everyone left ({took:.1f}s of polling); rooms closed over "
        f"{(ended[-1] - ended[0]).total_seconds():.1f}s; {probe.summary()}"
    )
    depth, _ = queue_info(fleet)
    assert depth == 0
    assert probe.all_ok(), probe.summary()


async def test_mongo_stopped_while_200_rooms_close(storm_fleet: Fleet) -> None:
    fleet = storm_fleet
    assert fleet.api is not None
    blocks = await asyncio.to_thread(insert_blocks, fleet, 200)
    mentors, students = await open_class(fleet, blocks)
    assert fleet.api.get("/api/code-blocks").status_code == 200  # the lobby was visited
    probe = LobbyProbe(fleet.api.url).start()
    fleet.mongo.stop()
    stopped = time.monotonic()
    try:
        leave_all(mentors, students)
        # Every room closes and its record waits in the queue (XLEN counts the entries
        # drainers hold too: they are deleted only once MongoDB has them).
        await await_until(
            lambda: queue_info(fleet)[0] >= len(blocks),
            within=60,
            interval=0.5,
            message="200 records queued",
        )
        ready = await await_until(
            lambda: (
                (r := fleet.gateways[0].get("/readyz").json())["archive"]["queue_depth"]
                >= len(blocks)
                and r
            ),
            within=10,
            message="the depth in /readyz",
        )
        say(f"MongoDB down: queue depth {queue_info(fleet)[0]}; gateway readyz {ready}")
        # The outage lasts its full length: nothing to wait for, a duration to hold.
        await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
    finally:
        fleet.mongo.start()
    try:
        took = await all_archived(fleet, blocks, within=120)
    finally:
        await probe.stop()
    check_archive(blocks, archived(fleet, blocks))
    say(
        f"MongoDB down {OUTAGE:.0f}s while 200 rooms closed: all archived {took:.1f}s after "
        f"it came back; {probe.summary()}"
    )
    assert queue_info(fleet)[0] == 0
    assert probe.all_ok(), probe.summary()


async def test_sigkill_a_gateway_whose_queue_holds_entries(storm_fleet: Fleet) -> None:
    fleet = storm_fleet
    blocks = await asyncio.to_thread(insert_blocks, fleet, 100)
    mentors, students = await open_class(fleet, blocks)
    ids = {g.get("/healthz").json()["gateway"]: g for g in fleet.gateways}
    fleet.mongo.stop()
    victim = None
    try:
        leave_all(mentors, students)
        await await_until(
            lambda: queue_info(fleet)[0] >= len(blocks),
            within=60,
            interval=0.5,
            message="100 records queued",
        )

        # The drainers hold entries they cannot write; kill the one holding the most.
        def held() -> dict[str, int]:
            pending = queue_info(fleet)[1]
            return pending if any(pending.get(i) for i in ids) else {}

        pending = await await_until(
            held, within=30, interval=0.2, message="entries pending for a gateway"
        )
        name = max(ids, key=lambda i: pending.get(i, 0))
        victim = ids[name]
        say(f"SIGKILL {name}, holding {pending[name]} of {len(blocks)} queued records")
        victim.kill()
    finally:
        fleet.mongo.start()
    try:
        took = await all_archived(fleet, blocks, within=120)
        check_archive(blocks, archived(fleet, blocks))
        say(
            f"all {len(blocks)} archived {took:.1f}s after MongoDB came back (claim idle "
            f"{CLAIM_IDLE:.0f}s)"
        )
        assert queue_info(fleet)[0] == 0
    finally:
        if victim is not None:
            victim.start()
