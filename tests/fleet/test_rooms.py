"""Room behaviour with clients spread over two real gateway processes and a real Redis.

Every test runs twice, on a single ``redis-server`` and on a Redis Cluster (``ENGINES``,
tests/fleet/conftest.py). Each numbered behaviour of the rooms issue has a test here:
join and the atomic mentor election, editing, read-only roles, presence and awareness,
solved, the mentor leaving (grace, resume token), the session archive and the lobby's
live status.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from services.gateway import tokens
from services.gateway.store import RoomStore, now_ms
from shared.keys import Keys
from shared.protocol import CloseCode
from shared.redisconn import redis_client
from shared.settings import load_settings
from tests.fleet.classroom import Classroom, boundaries
from tests.fleet.conftest import GRACE, KEEPALIVE, BlockInfo, Blocks, unique_client
from tests.hardening.tools import raw_connect
from tests.infra import EmbeddedMongo, Fleet, RedisServer, scaled, scrape
from tests.yclient import RoomClient, close_all, join, wait_for

pytestmark = [pytest.mark.fleet]
# Every test here runs on a single Redis and on a 3-primary Redis Cluster (conftest).
ENGINES = ("single", "cluster")


async def mentor_two_students_watcher(gw: list[str], block_id: str) -> list[RoomClient]:
    """A mentor, two students and a watcher, alternating between two gateways."""
    return [
        await join(gw[0], block_id),
        await join(gw[1], block_id),
        await join(gw[0], block_id),
        await join(gw[1], block_id, role="watcher"),
    ]


# 1. Join -----------------------------------------------------------------------------


async def test_roles_and_welcome_across_gateways(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    watcher = await join(gw[1], block.id, role="watcher")
    other = await join(gw[0], block.id, role="mentor")  # a role= other than watcher is ignored
    assert [c.role for c in (mentor, student, watcher, other)] == [
        "mentor",
        "student",
        "watcher",
        "student",
    ]
    welcome = mentor.last("welcome")
    assert welcome is not None
    assert welcome["blockId"] == block.id and welcome["session"]
    assert welcome["resumeToken"] and student.last("welcome")["resumeToken"] is None  # type: ignore[index]
    assert welcome["graceSeconds"] == GRACE
    assert {c.value for c in (mentor, student, watcher, other)} == {block.template}
    await close_all(mentor, student, watcher, other)


@pytest.mark.parametrize("block_id", ["0" * 24, "not-an-id", "abc", "6b0922b2043e5fcd1d8aae5"])
async def test_unknown_or_malformed_block_is_closed_with_4404(gw: list[str], block_id: str) -> None:
    client = await join(gw[0], block_id)
    await client.wait_for(client.closed.is_set, 5)
    assert client.close_code == CloseCode.UNKNOWN_BLOCK


async def test_mentor_election_is_atomic_across_gateways(blocks: Blocks, gw: list[str]) -> None:
    for _ in range(4):
        block = blocks.new()
        clients = [RoomClient(gw[i % 2], block.id) for i in range(10)]
        await asyncio.gather(*(c.connect() for c in clients))
        roles = sorted(c.role or "?" for c in clients)
        assert roles == ["mentor"] + ["student"] * 9
        await close_all(*clients)


async def test_watcher_first_does_not_take_the_mentor_role(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    watcher = await join(gw[0], block.id, role="watcher")
    first = await join(gw[1], block.id)
    assert (watcher.role, first.role) == ("watcher", "mentor")
    await close_all(watcher, first)


# 2. Editing ---------------------------------------------------------------------------


async def test_concurrent_edits_by_many_students_all_survive(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    students = [await join(gw[i % 2], block.id) for i in range(6)]
    rng = random.Random(7)
    tokens_typed = []
    for round_ in range(15):
        for i, s in enumerate(students):
            token = f"<{i}.{round_}>"
            tokens_typed.append(token)
            s.insert(rng.choice(boundaries(s.value)), token)
        await asyncio.sleep(0)  # let the sends go out interleaved
    everyone = [mentor, *students]
    await wait_for(lambda: all(t in c.value for c in everyone for t in tokens_typed), 15)
    await wait_for(lambda: len({c.value for c in everyone}) == 1, 5)
    late = await join(gw[1], block.id)
    assert late.value == mentor.value
    late0 = await join(gw[0], block.id)
    assert late0.value == mentor.value
    await close_all(*everyone, late, late0)


# 3. Read-only roles -------------------------------------------------------------------


@pytest.mark.parametrize("who", ["mentor", "watcher"])
async def test_read_only_roles_are_refused_on_the_server(
    blocks: Blocks, gw: list[str], who: str
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    watcher = await join(gw[0], block.id, role="watcher")
    writer = mentor if who == "mentor" else watcher
    writer.type_at_end("FORBIDDEN")
    await writer.wait_for(lambda: bool(writer.denied), 5)
    assert "read-only" in writer.denied[0]
    student.type_at_end("allowed")
    await wait_for(lambda: all("allowed" in c.value for c in (mentor, watcher)), 5)
    assert "FORBIDDEN" not in student.value
    late = await join(gw[1], block.id)
    assert "FORBIDDEN" not in late.value and "allowed" in late.value
    assert not writer.closed.is_set()  # refused, not disconnected
    await close_all(mentor, student, watcher, late)


# 4. Presence and awareness ------------------------------------------------------------


def presence(client: RoomClient) -> tuple[bool, int, int] | None:
    event = client.last("presence")
    if event is None:
        return None
    return event["mentor"], event["students"], event["watchers"]


async def test_presence_reaches_everyone_on_every_change(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor, s1, s2, w = everyone = await mentor_two_students_watcher(gw, block.id)
    await wait_for(lambda: all(presence(c) == (True, 2, 1) for c in everyone), 5)
    await s2.close()
    rest = [mentor, s1, w]
    await wait_for(lambda: all(presence(c) == (True, 1, 1) for c in rest), 5)
    await w.close()
    await wait_for(lambda: all(presence(c) == (True, 1, 0) for c in (mentor, s1)), 5)
    await mentor.close()
    await wait_for(lambda: presence(s1) == (False, 1, 0), 5)
    await s1.close()


async def test_awareness_is_relayed_and_removed_on_close(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    s1 = await join(gw[1], block.id)
    s2 = await join(gw[0], block.id)
    await s1.set_awareness('{"user":{"name":"Zoë 🎉","color":"#f00"}}')
    s1_id = s1.doc.client_id
    await wait_for(lambda: s1_id in mentor.awareness and s1_id in s2.awareness, 5)
    assert "Zoë 🎉" in mentor.awareness[s1_id]
    late = await join(gw[0], block.id)  # a late joiner gets the current states
    await wait_for(lambda: s1_id in late.awareness, 5)
    await s1.close()
    await wait_for(lambda: all(s1_id not in c.awareness for c in (mentor, s2, late)), 5)
    await close_all(mentor, s2, late)


async def test_late_joiner_on_a_new_gateway_sees_who_is_there(
    blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    s1 = await join(gw[0], block.id)
    await s1.set_awareness('{"user":{"name":"first"}}')
    await wait_for(lambda: s1.doc.client_id in mentor.awareness, 5)
    late = await join(gw[1], block.id)  # the first socket of this room on gateway 2
    # Awareness is not logged: gateway 2 asks the others when it opens the room.
    await wait_for(lambda: s1.doc.client_id in late.awareness, 3)
    await close_all(mentor, s1, late)


# 5. Solved -----------------------------------------------------------------------------


async def test_solved_once_per_match_for_everyone(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor, s1, s2, w = everyone = await mentor_two_students_watcher(gw, block.id)
    # Line endings and trailing whitespace do not matter.
    s1.set_text(block.solution.replace("\n", "  \r\n") + "\n\n")
    await wait_for(lambda: all(c.count("solved") == 1 for c in everyone), 5)
    s2.type_at_end("// more")  # no longer a match
    await wait_for(lambda: all("// more" in c.value for c in everyone), 5)
    await asyncio.sleep(scaled(0.3))  # a wrong second "solved" has every chance to arrive
    assert all(c.count("solved") == 1 for c in everyone)
    s2.set_text(block.solution)
    await wait_for(lambda: all(c.count("solved") == 2 for c in everyone), 5)
    await close_all(*everyone)


async def test_solved_when_the_match_takes_edits_racing_on_both_gateways(
    blocks: Blocks, gw: list[str]
) -> None:
    """Only the gateway that published an update checks the text, once the update is
    back in sequence: when the match needs two edits made at the same moment on two
    gateways, whichever comes last in the log is checked with both applied."""
    block = blocks.new()
    mentor, s1, s2, w = everyone = await mentor_two_students_watcher(gw, block.id)
    solution = block.solution
    cut = len(solution) // 2

    def solved_everywhere(times: int) -> Callable[[], bool]:
        return lambda: all(c.count("solved") == times for c in everyone)

    for round_ in range(1, 6):
        s1.set_text(solution[:cut] + "#" + solution[cut:] + "@")
        await wait_for(lambda: all(c.value == s1.value for c in everyone), 5)
        del s1.text[cut : cut + 1]  # s1 (first gateway) removes the '#'
        del s2.text[len(s2.text) - 1 :]  # s2 (second gateway) the '@', at the same time
        await wait_for(solved_everywhere(round_), 5)
        assert all(c.value == solution for c in everyone)
    await close_all(*everyone)


async def test_solved_again_when_one_gateway_breaks_the_match_and_another_mends_it(
    tmp_path: Path, redis_server: RedisServer, mongo: EmbeddedMongo
) -> None:
    """The student on the second gateway breaks the solved code, the one on the first
    mends it: the first gateway must know the match was broken (the `N` message), or it
    takes the mended text for the match it already announced. (The periodic log check
    would find it a few heartbeats later: heartbeats of 30 s keep it out of the way.)"""
    env = {"HEARTBEAT_INTERVAL_SECONDS": 30, "GATEWAY_DEAD_AFTER_SECONDS": 90}
    with Fleet(tmp_path, gateways=2, redis=redis_server, mongo=mongo, env=env) as fleet:
        gw = [g.ws_url + "/ws/rooms" for g in fleet.gateways]
        block = Blocks(fleet).new()
        mentor, s1, s2, w = everyone = await mentor_two_students_watcher(gw, block.id)

        def solved_everywhere(times: int) -> Callable[[], bool]:
            return lambda: all(c.count("solved") == times for c in everyone)

        s1.set_text(block.solution)
        await wait_for(solved_everywhere(1), 5)
        for times in (2, 3):
            s1.type_at_end("z")  # broken on the second gateway
            await wait_for(lambda: all(c.value == block.solution + "z" for c in everyone), 5)
            del s2.text[len(s2.text) - 1 :]  # mended on the first
            await wait_for(solved_everywhere(times), 5)
        await close_all(*everyone)


async def test_solution_never_reaches_a_client(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new(solution="const SECRET_SOLUTION_MARKER = 1;\n")
    frames: list[bytes] = []
    client = RoomClient(gw[0], block.id)
    original = client._on_frame

    async def spy(ws: object, frame: bytes) -> None:
        frames.append(frame)
        await original(ws, frame)  # type: ignore[arg-type]

    client._on_frame = spy  # type: ignore[method-assign]
    await client.connect()
    student = await join(gw[1], block.id)
    student.type_at_end("x")
    await wait_for(lambda: "x" in client.value, 5)
    assert not any(b"SECRET_SOLUTION_MARKER" in f for f in frames)
    await close_all(client, student)


# 6. Mentor leaves ----------------------------------------------------------------------


async def test_mentor_leaving_closes_the_room_after_the_grace(
    blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    s1 = await join(gw[1], block.id)
    w = await join(gw[0], block.id, role="watcher")
    s1.type_at_end("work in progress")
    await wait_for(lambda: "work in progress" in mentor.value, 5)
    left = time.monotonic()
    await mentor.close()
    await wait_for(lambda: s1.closed.is_set() and w.closed.is_set(), GRACE + 5)
    took = time.monotonic() - left
    assert took >= GRACE * 0.9
    assert s1.close_code == w.close_code == CloseCode.ROOM_CLOSED
    assert s1.last("room-closed") == {"type": "room-closed", "reason": "mentor-left"}
    print(f"room closed {took:.2f}s after the mentor left (grace {GRACE}s)")
    fresh = await join(gw[1], block.id)
    assert fresh.role == "mentor" and fresh.value == block.template
    await fresh.close()


async def test_a_grace_lost_with_the_closing_set_still_ends_the_room(
    room_fleet: Fleet, blocks: Blocks, gw: list[str]
) -> None:
    """The mentor left a room nobody else serves, and the closing set lost its deadline
    (its node restarted empty): whoever joins next keeps the grace, or, past it, ends the
    old session (archived) and opens a new one."""
    keys = Keys(room_fleet.env["REDIS_PREFIX"])
    redis = room_fleet.redis.client()

    async def abandoned() -> BlockInfo:
        block = blocks.new()
        mentor = await join(gw[0], block.id)
        student = await join(gw[1], block.id)
        student.type_at_end("old work")
        await wait_for(lambda: "old work" in mentor.value, 5)
        await mentor.close()
        await wait_for(lambda: redis.zscore(keys.closing, block.id) is not None, 5)
        await student.close()
        assert redis.zrem(keys.closing, block.id) == 1  # what the node's restart does
        return block

    try:
        past, during = await abandoned(), await abandoned()
        # Within the grace: the joiner is a student, the deadline is set again, and the room
        # ends when the grace is over.
        late = await join(gw[0], during.id)
        assert late.role == "student" and "old work" in late.value
        assert redis.zscore(keys.closing, during.id) is not None
        await wait_for(lambda: late.closed.is_set(), GRACE + 5)
        assert late.close_code == CloseCode.ROOM_CLOSED
        # Past the grace: the old session is ended and archived, the joiner mentors anew.
        await asyncio.sleep(scaled(GRACE + 0.5))
        fresh = await join(gw[1], past.id)
        assert fresh.role == "mentor" and fresh.value == past.template

        def archived() -> bool:
            r = blocks.admin_get(f"/api/code-blocks/{past.id}/sessions")
            return r.status_code == 200 and len(r.json()) == 1

        await wait_for(archived, 10)
        record = blocks.admin_get(f"/api/code-blocks/{past.id}/sessions").json()[0]
        assert "old work" in record["finalCode"] and record["reason"] == "mentor-left"
        await fresh.close()
    finally:
        redis.close()


async def test_a_gateway_reaped_while_alive_registers_its_members_again(
    room_fleet: Fleet, blocks: Blocks, gw: list[str]
) -> None:
    """Another gateway reaped gw-1 although it was alive (a stall or a partition longer
    than GATEWAY_DEAD_AFTER_SECONDS): its members were removed from the rooms and its
    heartbeat from the fleet. gw-1's next heartbeat finds its entry gone and resyncs its
    rooms: the counts are right again and its students keep editing."""
    keys = Keys(room_fleet.env["REDIS_PREFIX"])
    block = blocks.new()
    mentor = await join(gw[1], block.id)
    students = [await join(gw[0], block.id) for _ in range(2)]
    await wait_for(lambda: presence(mentor) == (True, 2, 0), 5)
    sync = room_fleet.redis.client()
    settings = load_settings(
        redis_url=room_fleet.env["REDIS_URL"],
        redis_cluster=room_fleet.env.get("REDIS_CLUSTER") == "true",
        redis_cluster_nodes=room_fleet.env.get("REDIS_CLUSTER_NODES", ""),
    )
    client = redis_client(settings)
    try:
        members = sync.hgetall(keys.room(block.id).members)
        reaped = {m.split("/")[0] for m, v in members.items() if v.startswith("s")}
        assert len(reaped) == 1
        gateway = reaped.pop()
        seen = len(mentor.events)
        # What the reaper does (Housekeeper.reap), with the same script.
        removed, _, _ = await RoomStore(client, keys).leave(
            block.id, gateway + "/", now_ms(), prefix=True
        )
        assert removed == 2
        sync.delete(keys.gateway_rooms(gateway))
        sync.zrem(keys.gateways, gateway)

        def counted(students: int) -> bool:  # a presence event since the reap says so
            return any(
                e["type"] == "presence" and e["students"] == students for e in mentor.events[seen:]
            )

        # The reap's counts reach the mentor, then the repaired ones (the repair may come
        # between two looks at the last event: the events since the reap are read).
        await wait_for(lambda: counted(0), 5)
        await wait_for(lambda: counted(2) and presence(mentor) == (True, 2, 0), 10)
        assert sync.zscore(keys.gateways, gateway) is not None
        assert sync.sismember(keys.gateway_rooms(gateway), block.id)
        assert "heartbeat was gone from the fleet" in room_fleet.gateways[0].log_text()
        students[0].type_at_end("still here")
        await wait_for(lambda: all("still here" in c.value for c in (mentor, students[1])), 5)
    finally:
        sync.close()
        await client.aclose()
    await close_all(mentor, *students)


async def test_mentor_refresh_with_resume_token_keeps_the_room(
    blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id, client_id=unique_client())
    student = await join(gw[1], block.id)
    student.type_at_end("kept")
    await wait_for(lambda: "kept" in mentor.value, 5)
    token, client_id = mentor.token, mentor.client_id
    await mentor.close()
    back = await join(gw[1], block.id, client_id=client_id, token=token)  # other gateway
    assert back.role == "mentor" and "kept" in back.value
    await asyncio.sleep(scaled(GRACE + 1.0))  # past the grace: the room must not close
    assert not student.closed.is_set()
    await wait_for(lambda: presence(student) == (True, 1, 0), 5)
    await close_all(back, student)


async def test_bad_tokens_grant_nothing(blocks: Blocks, gw: list[str], room_fleet: Fleet) -> None:
    block, other_block = blocks.new(), blocks.new()
    mentor = await join(gw[0], block.id, client_id=unique_client())
    elsewhere = await join(gw[0], other_block.id, client_id=unique_client())
    token, client_id = mentor.token, mentor.client_id
    assert token is not None and client_id is not None
    session = mentor.last("welcome")["session"]  # type: ignore[index]
    secret = room_fleet.env["TOKEN_SECRET"].encode()
    forged = tokens.issue(b"not-the-secret", block.id, session, client_id, int(time.time()) + 60)
    expired = tokens.issue(secret, block.id, session, client_id, int(time.time()) - 1)
    tampered = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    attempts = {
        "forged": (client_id, forged),
        "expired": (client_id, expired),
        "tampered": (client_id, tampered),
        "other room's token": (elsewhere.client_id, elsewhere.token),
        "replayed client id without token": (client_id, None),
        "token with another client id": (unique_client(), token),
    }
    await mentor.close()  # the mentor is away: the slot is held for the grace
    for what, (cid, tok) in attempts.items():
        c = await join(gw[1], block.id, client_id=cid, token=tok)
        assert c.role == "student", what
        await c.close()
    await elsewhere.close()


async def test_a_socket_that_never_answers_pings_is_closed(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)  # answers pings (websockets does)
    sock = await raw_connect(gw[1], f"/ws/rooms/{block.id}")  # never reads, never pongs
    code = None
    async with asyncio.timeout(scaled(2.5 * KEEPALIVE + 10)):
        while code is None:
            op, data = await sock.read_frame()
            if op == 0x8:
                code = int.from_bytes(data[:2], "big")
    sock.abort()
    assert code == CloseCode.INTERNAL_ERROR  # 1011: reconnect, as for a dead peer
    assert not mentor.closed.is_set()
    await mentor.close()


# 7. Session archive ---------------------------------------------------------------------


async def test_closed_room_is_archived(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    students = [await join(gw[i % 2], block.id) for i in range(3)]
    students[0].set_text(block.solution)
    await wait_for(lambda: mentor.count("solved") == 1, 5)
    await students[1].close()
    await mentor.close()
    await wait_for(lambda: students[0].closed.is_set(), GRACE + 5)

    def archived() -> bool:
        r = blocks.admin_get(f"/api/code-blocks/{block.id}/sessions")
        return r.status_code == 200 and len(r.json()) == 1

    await wait_for(archived, 10)
    record = blocks.admin_get(f"/api/code-blocks/{block.id}/sessions").json()[0]
    assert record["blockId"] == block.id
    assert record["finalCode"] == block.solution
    assert record["solved"] is True
    assert record["peakStudents"] == 3
    assert record["reason"] == "mentor-left"
    assert record["startedAt"] < record["endedAt"]
    assert blocks.api.get(f"/api/code-blocks/{block.id}/sessions").status_code == 401
    await close_all(*students)


# 8. Lobby status -------------------------------------------------------------------------


async def test_lobby_status_from_redis(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    api = blocks.api

    def status() -> dict[str, object] | None:
        rooms = api.get("/api/rooms").json()["rooms"]
        return next((r for r in rooms if r["blockId"] == block.id), None)

    assert status() is None
    mentor = await join(gw[0], block.id)
    s = [await join(gw[1], block.id), await join(gw[0], block.id)]
    w = await join(gw[1], block.id, role="watcher")
    await wait_for(
        lambda: status() == {"blockId": block.id, "mentor": True, "students": 2, "watchers": 1}, 5
    )
    await s[0].close()
    await wait_for(lambda: (status() or {}).get("students") == 1, 5)
    await close_all(mentor, s[1], w)
    await wait_for(lambda: status() is None, GRACE + 5)


async def test_each_gateway_froze_its_startup_heap_and_times_its_collections(
    blocks: Blocks, gw: list[str], room_fleet: Fleet
) -> None:
    """What the gateway built before serving is out of the collector's scans (thousands
    of objects: modules, classes, settings), and every collection's pause is measured."""
    block = blocks.new()
    clients = await mentor_two_students_watcher(gw, block.id)
    for i in range(40):  # enough allocations for young collections on both gateways
        clients[1 + i % 2].type_at_end(f"x{i};")
    await wait_for(lambda: all("x39;" in c.value for c in clients), 10)

    def young_collections(url: str) -> float:
        return scrape(url)['coderoom_gateway_gc_pause_seconds_count{generation="0"}']

    await wait_for(lambda: all(young_collections(g.url) > 0 for g in room_fleet.gateways), 10)
    for gateway in room_fleet.gateways:
        assert scrape(gateway.url)["coderoom_gateway_gc_frozen_objects"] > 10_000
    await close_all(*clients)


def repairs(fleet: Fleet) -> list[float]:
    """Each gateway's rooms resynced so far (a resync re-registers and republishes)."""
    return [scrape(g.url)["coderoom_gateway_resyncs_total"] for g in fleet.gateways]


async def test_students_typing_fast_need_no_repair(
    blocks: Blocks, gw: list[str], room_fleet: Fleet
) -> None:
    """Without a fault nothing is resynced, however fast the channel moves while the
    periodic check reads the rooms' heads (it once took updates applied during its read
    for lost writes: tens of needless resyncs per gateway in every benchmark run)."""
    room = Classroom(gw, [blocks.new().id for _ in range(6)], students=4)
    await room.start()
    before = repairs(room_fleet)
    room.start_typing(interval=0.01)
    await asyncio.sleep(scaled(5))  # several periodic checks on each gateway
    edits = await room.stop_typing()
    await room.wait_converged(15)
    after = repairs(room_fleet)
    await room.close()
    assert edits > 500
    assert after == before, f"resyncs without a fault: {before} -> {after}"
