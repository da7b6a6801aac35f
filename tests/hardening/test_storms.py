"""Storms against one live gateway: malformed frames, connect/disconnect churn, a
client that never reads. Each prints its rate and the gateway's RSS before and after."""

from __future__ import annotations

import asyncio
import collections
import time
import uuid

import pytest

from shared import protocol
from shared.protocol import CloseCode
from shared.ywire import encode_awareness_update, encode_var_uint
from tests.fleet.conftest import Blocks
from tests.hardening.conftest import SMALL_LIMITS
from tests.hardening.tools import NO_CLOSE, closes, frame, raw_connect, rss_mib
from tests.infra import Fleet, scaled, scrape
from tests.yclient import RoomClient, close_all, join, wait_for

pytestmark = [pytest.mark.fleet, pytest.mark.slow]

FLEET_ENV = {
    **SMALL_LIMITS,
    "MAX_CONNECTIONS_PER_IP": 0,  # the storms come from one address
    "MAX_ROOM_MEMBERS": 500,
    "MAX_DOC_BYTES": 8 << 20,
    # A socket that stops reading also stops answering pings: with the default 3 s
    # keepalive it would be closed as silent (1011) before it is found slow (4000).
    "KEEPALIVE_SECONDS": 120,
}
FLEET_GATEWAYS = 1
RSS_GROWTH_MIB = 30
GRACE = float(SMALL_LIMITS["MENTOR_GRACE_SECONDS"])  # type: ignore[arg-type]


async def bystanders(url: str, block_id: str) -> tuple[RoomClient, RoomClient, RoomClient]:
    mentor = await join(url, block_id)
    a = await join(url, block_id)
    b = await join(url, block_id)
    return mentor, a, b


async def still_works(mentor: RoomClient, a: RoomClient, b: RoomClient) -> None:
    t1, t2 = f"<{uuid.uuid4().hex[:6]}>", f"<{uuid.uuid4().hex[:6]}>"
    a.type_at_end(t1)
    b.type_at_end(t2)
    await wait_for(lambda: all(t1 in c.value and t2 in c.value for c in (mentor, a, b)), 10)
    assert all(c.connected for c in (mentor, a, b))


BAD = [
    frame(b"\x07\x01\x02"),
    frame(b"\x80"),
    frame(b"\xff" * 10),
    frame(protocol.sync_update(encode_var_uint(1 << 28) + b"\x00\x00")),
    frame(protocol.sync_step1(encode_var_uint(1 << 28) + b"\x01\x01\x01")),
    frame(protocol.sync_update(b"\x01\x01\x05\x00\xff\xff\xff")),
    frame(protocol.awareness_message(b"\x01\x05\x01\x03{x}")),
    frame(b"not binary", opcode=1),
    frame(b"\x00\x09\x00"),
    frame(protocol.SOLVED),
]
OVERSIZED = frame(b"\x00\x02" + b"\x00" * 70000)


async def test_storm_of_malformed_frames(hfleet: Fleet, hblocks: Blocks) -> None:
    gateway = hfleet.gateways[0]
    url = gateway.ws_url + "/ws/rooms"
    rooms = [hblocks.new() for _ in range(3)]
    mentor, a, b = await bystanders(url, rooms[0].id)
    other_mentors = [await join(url, r.id) for r in rooms[1:]]
    targets = [r.id for r in rooms]
    frames_per_conn, connections, workers = 6, 1700, 24
    codes: collections.Counter[int] = collections.Counter()
    sent = 0
    in_before = scrape(gateway.url)["coderoom_gateway_messages_in_total"]
    rss_before = rss_mib(gateway.pid)
    queue = list(range(connections))

    async def worker() -> None:
        nonlocal sent
        while queue:
            n = queue.pop()
            sock = await raw_connect(gateway.ws_url, f"/ws/rooms/{targets[n % len(targets)]}")
            assert sock.open
            burst = [BAD[(n + i) % len(BAD)] for i in range(frames_per_conn)]
            if n % 50 == 0:
                burst[0] = OVERSIZED
            try:
                sock.send_nowait(b"".join(burst))
                sent += len(burst)
            except ConnectionError:
                pass
            codes[await sock.until_closed(10)] += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    took = time.monotonic() - started
    in_after = scrape(gateway.url)["coderoom_gateway_messages_in_total"]
    rss_after = rss_mib(gateway.pid)
    print(
        f"malformed storm: {sent} frames on {connections} connections ({workers} at a time) "
        f"in {took:.1f}s = {sent / took:.0f} frames/s, {connections / took:.0f} conn/s; "
        f"gateway read {in_after - in_before:.0f} of them before closing; close codes "
        f"{dict(codes)}; RSS {rss_before:.1f} -> {rss_after:.1f} MiB"
    )
    assert sent >= 10_000
    assert set(codes) <= {CloseCode.BAD_REQUEST, 1009}, codes
    assert codes[1009] == connections // 50
    assert gateway.get("/healthz").status_code == 200
    await still_works(mentor, a, b)
    assert rss_after - rss_before < RSS_GROWTH_MIB
    await close_all(mentor, a, b, *other_mentors)


async def test_connect_disconnect_churn_leaves_exact_counts(hfleet: Fleet, hblocks: Blocks) -> None:
    gateway = hfleet.gateways[0]
    url = gateway.ws_url + "/ws/rooms"
    block = hblocks.new()
    mentor, a, b = await bystanders(url, block.id)
    watcher = await join(url, block.id, role="watcher")
    cycles, workers = 2000, 20
    rss_before = rss_mib(gateway.pid)
    queue = list(range(cycles))
    codes: collections.Counter[int] = collections.Counter()

    async def worker() -> None:
        while queue:
            n = queue.pop()
            role = "?role=watcher" if n % 3 == 0 else ""
            sock = await raw_connect(gateway.ws_url, f"/ws/rooms/{block.id}{role}")
            assert sock.open
            if n % 2:
                await sock.read_until("welcome")
                sock.send_nowait(frame(b"\x03\xe8", opcode=8))  # a clean close, 1000
                codes[await sock.until_closed(10)] += 1
            else:
                sock.abort()  # vanish without a close frame
                codes[NO_CLOSE] += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(workers)))
    took = time.monotonic() - started
    expected = {"mentor": True, "students": 2, "watchers": 1}

    def counts_exact() -> bool:
        event = a.last("presence") or {}
        return {k: event.get(k) for k in expected} == expected

    await wait_for(counts_exact, 15)
    redis = hfleet.redis.client()
    try:
        keys = hfleet.keys.room(block.id)
        state = redis.hgetall(keys.state)
        members = redis.hlen(keys.members)
    finally:
        redis.close()
    lobby = [r for r in hfleet.api.get("/api/rooms").json()["rooms"] if r["blockId"] == block.id]  # type: ignore[union-attr]
    live = scrape(gateway.url)["coderoom_gateway_connections"]
    rss_after = rss_mib(gateway.pid)
    print(
        f"churn: {cycles} connect/disconnect cycles ({workers} at a time) in {took:.1f}s "
        f"= {cycles / took:.0f}/s; client-side codes {dict(codes)}; Redis n_mentor/n_student/"
        f"n_watcher = {state.get('n_mentor')}/{state.get('n_student')}/{state.get('n_watcher')}, "
        f"members={members}, peak_students={state.get('peak_students')}; gateway connections "
        f"{live:.0f}; RSS {rss_before:.1f} -> {rss_after:.1f} MiB"
    )
    assert (state["n_mentor"], state["n_student"], state["n_watcher"]) == ("1", "2", "1")
    assert members == 4
    assert lobby == [{"blockId": block.id, **expected}]
    assert live == 4
    assert rss_after - rss_before < RSS_GROWTH_MIB
    await still_works(mentor, a, b)
    await close_all(mentor, a, b, watcher)


async def test_slow_consumer_is_closed_with_4000(hfleet: Fleet, hblocks: Blocks) -> None:
    gateway = hfleet.gateways[0]
    url = gateway.ws_url + "/ws/rooms"
    block = hblocks.new()
    mentor, a, b = await bystanders(url, block.id)
    typists = [await join(url, block.id) for _ in range(10)]
    slow = await raw_connect(gateway.ws_url, f"/ws/rooms/{block.id}?role=watcher", rcvbuf=4096)
    await slow.read_until("welcome")
    slow.reader_transport.pause_reading()  # from now on it never reads: the kernel fills up
    closes_before = closes(gateway.url, CloseCode.SLOW_CONSUMER)
    rss_before = rss_mib(gateway.pid)
    # Everyone else types a lot: 8 KB pastes and 3.5 KB awareness states, within the rate.
    state = '{"user":{"name":"' + "n" * 3500 + '"}}'
    started = time.monotonic()
    rounds = 0
    while closes(gateway.url, CloseCode.SLOW_CONSUMER) == closes_before:
        assert time.monotonic() - started < scaled(30), "the slow consumer was never closed"
        rounds += 1
        for i, t in enumerate(typists):
            t.type_at_end(f"<{i}.{rounds}>" + "p" * 8000)
            update = encode_awareness_update([(t.doc.client_id, rounds, state)])
            await t.send_raw(protocol.awareness_message(update))
        await asyncio.sleep(0.1)  # 2 frames per typist per tick: 20/s, the rate limit
    took = time.monotonic() - started
    slow.reader_transport.resume_reading()
    code = await slow.until_closed(10)  # reads what was buffered, then the close or EOF
    print(
        f"slow consumer closed after {took:.1f}s ({rounds} rounds, about "
        f"{rounds * len(typists) * 11.6:.0f} KB fanned out to it); it saw close {code}; "
        f"RSS {rss_before:.1f} -> {rss_mib(gateway.pid):.1f} MiB"
    )
    assert code in (CloseCode.SLOW_CONSUMER, NO_CLOSE)
    everyone = (mentor, a, b, *typists)
    assert all(c.connected for c in everyone)
    marker = "<after>"
    a.type_at_end(marker)
    await wait_for(lambda: all(marker in c.value for c in everyone), 10)
    await wait_for(lambda: len({c.value for c in everyone}) == 1, 10)
    await wait_for(lambda: (a.last("presence") or {}).get("watchers") == 0, 10)
    assert gateway.get("/healthz").status_code == 200
    assert rss_mib(gateway.pid) - rss_before < RSS_GROWTH_MIB
    await close_all(*everyone)


# Last in the module: if it fails, it may leave hung sockets on the gateway.
async def test_joins_racing_a_closing_room_get_named_codes(hfleet: Fleet, hblocks: Blocks) -> None:
    gateway = hfleet.gateways[0]
    block = hblocks.new()  # no live mentor: the first attacker is mentor, its room closes
    codes: collections.Counter[int] = collections.Counter()
    closed_before = scrape(gateway.url)["coderoom_gateway_rooms_closed_total"]
    until = time.monotonic() + 4 * GRACE  # the room closes and reopens a few times
    count = iter(range(10**6))

    async def worker() -> None:
        while time.monotonic() < until:
            n = next(count)
            sock = await raw_connect(gateway.ws_url, f"/ws/rooms/{block.id}")
            sock.send_nowait(b"".join(BAD[(n + i) % len(BAD)] for i in range(6)))
            code = await sock.until_closed(5)  # NO_ANSWER (-1) if the server hangs
            events = b"".join(sock.received)
            if code == CloseCode.ROOM_CLOSED and b"room-closed" not in events:
                code = -code  # a terminal code without the event is a failure too
            codes[code] += 1

    await asyncio.gather(*(worker() for _ in range(16)))
    live = scrape(gateway.url)["coderoom_gateway_connections"]
    closed = scrape(gateway.url)["coderoom_gateway_rooms_closed_total"] - closed_before
    print(
        f"joins racing a closing room: close codes {dict(codes)}; the room closed "
        f"{closed:.0f} times; sockets left open {live:.0f}"
    )
    assert closed >= 1, "the room never closed: the joins raced nothing"
    assert set(codes) <= {CloseCode.BAD_REQUEST, CloseCode.ROOM_CLOSED, 1013}, codes
    # No handler may hang: every socket of the race is gone from the gateway.
    await wait_for(lambda: scrape(gateway.url)["coderoom_gateway_connections"] == 0, 5)
