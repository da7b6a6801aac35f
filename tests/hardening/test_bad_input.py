"""Bad input against a live gateway (real process, real Redis, small limits).

Every case: the offender gets a named close code (or an HTTP error before the
handshake), a bystander room on the same gateway keeps editing and receiving, and the
gateway's RSS stays flat over whatever ran of the module (checked when the module's
``gateway_rss`` fixture is torn down, after its last test).
"""

from __future__ import annotations

import asyncio
import random
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import orjson
import pytest
from pycrdt import Text

from shared import protocol
from shared.protocol import CloseCode
from shared.ywire import encode_var_uint
from tests.fleet.conftest import Blocks
from tests.hardening.conftest import SMALL_LIMITS
from tests.hardening.tools import (
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    frame,
    raw_connect,
    raw_join,
    rss_mib,
)
from tests.infra import Fleet, scaled
from tests.yclient import RoomClient, close_all, join, text_doc, text_update, wait_for

pytestmark = [pytest.mark.fleet]

FLEET_ENV = SMALL_LIMITS
FLEET_GATEWAYS = 1
MAX_FRAME = int(SMALL_LIMITS["MAX_FRAME_BYTES"])  # type: ignore[call-overload]

BOMB_UPDATE = encode_var_uint(1 << 28) + b"\x00\x00"  # 7 bytes claiming 2^28 struct groups
BOMB_STATE_VECTOR = encode_var_uint(1 << 28) + b"\x01\x01\x01"  # 8 bytes, 2^28 entries


def big_update(chars: int, client_id: int) -> bytes:
    """A valid standalone Yjs update inserting `chars` characters into ``code``."""
    return text_update("x" * chars, client_id)


@dataclass
class Room:
    block_id: str
    mentor: RoomClient
    a: RoomClient
    b: RoomClient

    async def still_works(self) -> None:
        """Both bystander students edit, and everyone receives both edits."""
        t1, t2 = f"<a{uuid.uuid4().hex[:6]}>", f"<b{uuid.uuid4().hex[:6]}>"
        self.a.type_at_end(t1)
        self.b.type_at_end(t2)
        everyone = (self.mentor, self.a, self.b)
        await wait_for(lambda: all(t1 in c.value and t2 in c.value for c in everyone), 5)
        assert all(c.connected for c in everyone)


RSS_GROWTH_MIB = 30


@pytest.fixture(scope="module", autouse=True)
def gateway_rss(hfleet: Fleet) -> Iterator[float]:
    """The gateway's RSS before the module's first test; after its last one (whichever
    ran, in whatever order, on this worker) the gateway must be healthy and its RSS
    within `RSS_GROWTH_MIB` of it."""
    gateway = hfleet.gateways[0]
    start = rss_mib(gateway.pid)
    yield start
    end = rss_mib(gateway.pid)
    print(f"\ngateway RSS: {start:.1f} MiB at start, {end:.1f} MiB after bad input")
    assert gateway.alive and gateway.get("/healthz").status_code == 200
    assert end - start < RSS_GROWTH_MIB, f"gateway RSS grew {end - start:.1f} MiB"


@pytest.fixture
async def room(hblocks: Blocks, hgw: list[str]) -> AsyncIterator[Room]:
    block = hblocks.new()
    mentor, a, b = [await join(hgw[0], block.id) for _ in range(3)]
    assert (mentor.role, a.role, b.role) == ("mentor", "student", "student")
    yield Room(block.id, mentor, a, b)
    await close_all(mentor, a, b)


async def attack(ws_base: str, block_id: str, frames: list[bytes | str], query: str = "") -> int:
    """Join as a (raw) student, send `frames`, return the close code the server sent."""
    sock = await raw_join(ws_base, block_id, query)
    for f in frames:
        try:
            await sock.send(f)
        except ConnectionError:
            break
    return await sock.until_closed(10)


_rng = random.Random(20240601)
CASES: dict[str, tuple[list[bytes | str], int]] = {
    "random-bytes": ([b"\x09" + _rng.randbytes(200)], CloseCode.BAD_REQUEST),
    "random-bytes-after-sync-header": (
        [b"\x00\x02\x40" + _rng.randbytes(64)],
        CloseCode.BAD_REQUEST,
    ),
    "empty-frame": ([b""], CloseCode.BAD_REQUEST),
    "truncated-varint": ([b"\x80"], CloseCode.BAD_REQUEST),
    "truncated-length-varint": ([b"\x00\x02\xff\xff"], CloseCode.BAD_REQUEST),
    "overlong-varint": ([b"\xff" * 12 + b"\x01"], CloseCode.BAD_REQUEST),
    "overlong-length": ([b"\x00\x02" + b"\xff" * 9 + b"\x01"], CloseCode.BAD_REQUEST),
    "unknown-type-7": ([b"\x07\x00"], CloseCode.BAD_REQUEST),
    "unknown-sync-subtype": ([b"\x00\x05\x00"], CloseCode.BAD_REQUEST),
    "control-event-from-client": ([protocol.SOLVED], CloseCode.BAD_REQUEST),
    "update-bomb-2^28-structs": ([protocol.sync_update(BOMB_UPDATE)], CloseCode.BAD_REQUEST),
    "step2-bomb": ([protocol.sync_step2(BOMB_UPDATE)], CloseCode.BAD_REQUEST),
    "state-vector-bomb-2^28": ([protocol.sync_step1(BOMB_STATE_VECTOR)], CloseCode.BAD_REQUEST),
    "invalid-yjs-update": (
        [protocol.sync_update(b"\x01\x01\x05\x00\xff\xff\xff")],
        CloseCode.BAD_REQUEST,
    ),
    "awareness-claims-2^28-clients": (
        [protocol.awareness_message(encode_var_uint(1 << 28) + b"\x01")],
        CloseCode.BAD_REQUEST,
    ),
    "awareness-not-json": (
        [protocol.awareness_message(b"\x01\x05\x01\x03{x}")],
        CloseCode.BAD_REQUEST,
    ),
    "text-frame": (["hello"], CloseCode.BAD_REQUEST),
    "text-frame-json": (['{"type":"solved"}'], CloseCode.BAD_REQUEST),
    "frame-over-max-frame-bytes": ([b"\x00\x02" + b"\x00" * (MAX_FRAME + 10)], 1009),
    "flood-past-rate-limit": (
        [protocol.sync_update(big_update(1, 1000 + i)) for i in range(120)],
        CloseCode.RATE_LIMITED,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_frame_closes_offender_only(room: Room, hgw: list[str], case: str) -> None:
    frames, expected = CASES[case]
    code = await attack(hgw[0], room.block_id, frames)
    print(f"{case}: closed with {code}")
    assert code == expected
    await room.still_works()


async def test_update_growing_the_doc_past_max_doc_bytes_is_4413(
    room: Room, hgw: list[str]
) -> None:
    chunk = 20000  # three of these fit a 64 KiB frame each, not a 64 KiB document
    frames: list[bytes | str] = [
        protocol.sync_update(big_update(chunk, 5000 + i)) for i in range(4)
    ]
    code = await attack(hgw[0], room.block_id, frames)
    print(f"doc growth: closed with {code}; bystander doc {len(room.a.value)} chars")
    assert code == CloseCode.DOC_TOO_LARGE
    assert len(room.a.value) <= int(SMALL_LIMITS["MAX_DOC_BYTES"])  # type: ignore[call-overload]
    # The room keeps working for what still fits (a keystroke is a few bytes).
    await wait_for(lambda: room.a.value == room.b.value == room.mentor.value, 5)
    await room.still_works()


ODD_QUERIES = {
    "unicode-client": "?client=" + urllib.parse.quote("Zoë🎉‏\u200b"),
    "nul-client": "?client=%00abc",
    "control-chars": "?client=%1b%5b31m%0d%0a",
    "long-client": "?client=" + "a" * 3000,
    "repeated-params": "?client=one&client=two&role=watcher&role=mentor",
    "bad-percent": "?client=%zz%ff%fe&token=%",
    "empty-values": "?client=&token=&role=",
    "junk-token": "?token=" + "v1." * 500,
    "no-equals": "?client&token&role",
}


@pytest.mark.parametrize("name", list(ODD_QUERIES))
async def test_odd_query_strings_join_safely(room: Room, hgw: list[str], name: str) -> None:
    sock = await raw_join(hgw[0], room.block_id, ODD_QUERIES[name])
    welcome = sock.welcome
    client_id = str(welcome["clientId"])
    print(f"{name}: role={welcome['role']} clientId={client_id!r}")
    assert welcome["role"] in ("student", "watcher")  # never the mentor: the room has one
    assert 0 < len(client_id) <= 64 and client_id.isprintable() and "\x00" not in client_id
    assert welcome["resumeToken"] is None
    sock.abort()
    await room.still_works()


async def test_too_many_query_params_is_bad_request(room: Room, hgw: list[str]) -> None:
    query = "?" + "&".join(f"p{i}=x" for i in range(30))
    sock = await raw_connect(hgw[0], f"/ws/rooms/{room.block_id}{query}")
    assert sock.open
    code = await sock.until_closed(5)
    print(f"30 query params: closed with {code}")
    await room.still_works()
    assert code == CloseCode.BAD_REQUEST


async def test_request_line_over_8_kib_is_http_414(room: Room, hgw: list[str]) -> None:
    sock = await raw_connect(hgw[0], f"/ws/rooms/{room.block_id}?client=" + "a" * 10000)
    sock.abort()
    print(f"10 KB request line: HTTP {sock.handshake.status}")
    assert sock.handshake.status == 414
    await room.still_works()


NOT_IDS = [
    "0" * 24,  # well-formed, unknown
    "not-an-id",
    "%2e%2e",
    "..",
    "ABCDEF0123456789ABCDEF01",  # upper-case hex is not how ids are written
    "6b0922b2043e5fcd1d8aae5",  # 23 chars
    "6b0922b2043e5fcd1d8aae5a1",  # 25 chars
    urllib.parse.quote("ï" * 24),
    "%00" * 8,
    "x" * 4000,
    "",
]


@pytest.mark.parametrize("block_id", NOT_IDS, ids=lambda b: b[:30] or "empty")
async def test_block_ids_that_are_not_ids_are_4404(hgw: list[str], block_id: str) -> None:
    sock = await raw_connect(hgw[0], f"/ws/rooms/{block_id}")
    assert sock.open, sock.handshake
    code = await sock.until_closed(5)
    assert code == CloseCode.UNKNOWN_BLOCK
    assert not any(b"welcome" in f for f in sock.received)


OUTSIDE = [
    "/",
    "/ws",
    "/ws/rooms",
    "/ws/room/0123456789abcdef01234567",
    "/ws/rooms/0123456789abcdef01234567/extra",
    "/ws/rooms/../../etc/passwd",
    "/api/code-blocks",
    "/WS/ROOMS/0123456789abcdef01234567",
    "//ws/rooms/0123456789abcdef01234567",
]


@pytest.mark.parametrize("path", OUTSIDE)
async def test_paths_outside_ws_rooms_are_http_404_json(hgw: list[str], path: str) -> None:
    sock = await raw_connect(hgw[0], path)
    sock.abort()
    assert sock.handshake.status == 404, sock.handshake
    assert sock.handshake.headers["content-type"] == "application/json"
    assert orjson.loads(sock.handshake.body)["error"]["code"] == "not_found"


def _appends(n: int, client_id: int) -> list[bytes]:
    """``n`` Yjs updates from one client, each appending a numbered mark to ``code``."""
    doc = text_doc(client_id=client_id)
    text = doc.get("code", type=Text)
    out = []
    for i in range(n):
        before = doc.get_state()
        text += f"[{i}]"
        out.append(doc.get_update(before))
    return out


def _fragmented(message: bytes) -> bytes:
    """One message as three frames, a ping between the first two."""
    a, b = len(message) // 3, 2 * len(message) // 3
    return (
        frame(message[:a], OP_BINARY, fin=False)
        + frame(b"p", OP_PING)
        + frame(message[a:b], OP_CONT, fin=False)
        + frame(message[b:], OP_CONT, fin=True)
    )


async def test_messages_keep_their_order_whatever_their_framing(room: Room, hgw: list[str]) -> None:
    """Whole binary frames take the gateway's direct path, everything else websockets'
    queue: sent before the join is done, fragmented, interleaved with pings, every
    message still reaches the others once and in the order it was sent."""
    listener = await raw_join(hgw[0], room.block_id, "?role=watcher")
    messages = [protocol.sync_update(u) for u in _appends(12, 777_001)]
    sender = await raw_connect(hgw[0], f"/ws/rooms/{room.block_id}")
    assert sender.open
    # Before the welcome (the socket is still joining): whole, fragmented, whole, whole.
    m = messages
    sender.send_nowait(frame(m[0]) + _fragmented(m[1]) + frame(m[2]) + frame(m[3]))
    await sender.read_until("welcome")
    # In the room, in one write: whole, fragmented, whole, whole; then one write each.
    sender.send_nowait(frame(m[4]) + _fragmented(m[5]) + frame(m[6]) + frame(m[7]))
    for message in m[8:]:
        sender.send_nowait(_fragmented(message) if message is m[10] else frame(message))
        await asyncio.sleep(0.01)
    wanted = set(messages)
    got: list[bytes] = []
    async with asyncio.timeout(scaled(10)):
        while len(got) < len(messages):
            op, data = await listener.read_frame()
            if op == OP_PING:
                listener.send_nowait(frame(data, OP_PONG))
            elif data in wanted:
                got.append(data)
    print(f"{len(got)} messages relayed; order kept: {got == messages}")
    assert got == messages
    assert "".join(f"[{i}]" for i in range(12)) in room.mentor.value
    sender.abort()
    listener.abort()
    await room.still_works()
