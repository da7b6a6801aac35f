"""Abuse of a live fleet (two gateways, small limits): every attempt is refused.

Read-only roles writing by any message type, stealing the mentor role, cross-site
websocket hijacking, reading the solution off any frame, and exhausting a gateway
(connections per address, members per room).
"""

from __future__ import annotations

import asyncio
import base64
import time
import urllib.parse
import uuid

import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from services.gateway import tokens
from shared import protocol
from shared.protocol import CloseCode
from shared.ywire import encode_awareness_update
from tests.fleet.conftest import Blocks, unique_client
from tests.hardening.conftest import SMALL_LIMITS
from tests.hardening.tools import raw_connect, raw_join
from tests.infra import Fleet, scaled, scrape
from tests.yclient import RoomClient, close_all, join, text_update, wait_for

pytestmark = [pytest.mark.fleet]

FLEET_ENV = SMALL_LIMITS
FLEET_GATEWAYS = 2
GRACE = float(SMALL_LIMITS["MENTOR_GRACE_SECONDS"])  # type: ignore[arg-type]


# --- read-only roles --------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["mentor", "watcher"])
async def test_read_only_roles_cannot_write_by_any_message(
    hblocks: Blocks, hgw: list[str], who: str
) -> None:
    block = hblocks.new()
    mentor = await join(hgw[0], block.id)
    student = await join(hgw[1], block.id)
    watcher = await join(hgw[0], block.id, role="watcher")
    writer = mentor if who == "mentor" else watcher
    bystander = watcher if who == "mentor" else mentor
    update = text_update("FORBIDDEN-1", 4242)
    state_b64 = base64.b64encode(update).decode()
    carrying = orjson.dumps({"y": state_b64, "code": "FORBIDDEN-3"}).decode()
    spoofed = '{"code":"FORBIDDEN-4"}'
    # Awareness first: whatever it does, the sync writes after it are still refused.
    attempts = {
        "awareness carrying the doc update": protocol.awareness_message(
            encode_awareness_update([(writer.doc.client_id, 1, carrying)])
        ),
        "awareness under the student's Yjs id": protocol.awareness_message(
            encode_awareness_update([(student.doc.client_id, 99, spoofed)])
        ),
        "sync update": protocol.sync_update(update),
        "sync step 2": protocol.sync_step2(text_update("FORBIDDEN-2", 4343)),
    }
    for frame in attempts.values():
        await writer.send_raw(frame)
    await wait_for(lambda: len(writer.denied) >= 2, 5)  # both sync writes refused, by name
    assert all("read-only" in d for d in writer.denied)
    # Awareness is relayed as awareness (docs/security.md, "Awareness rules"): the others,
    # on both gateways, hold both states as sent; a Yjs id is not authenticated, so the
    # student's id now carries the writer's state. Neither reached the document or a role.
    await wait_for(
        lambda: all(
            c.awareness.get(writer.doc.client_id) == carrying
            and c.awareness.get(student.doc.client_id) == spoofed
            for c in (student, bystander)
        ),
        5,
    )
    student.type_at_end("allowed")
    everyone = (mentor, student, watcher)
    await wait_for(lambda: all("allowed" in c.value for c in everyone), 5)
    late = await join(hgw[1], block.id)
    for c in (*everyone, late):
        assert "FORBIDDEN" not in c.value, c.value
    assert len(writer.denied) == 2, writer.denied  # the sync writes only, not awareness
    assert (writer.role, student.role) == (who, "student")
    assert not writer.closed.is_set()  # refused, not disconnected
    print(f"{who}: {len(attempts)} write attempts, denied={writer.denied}, doc unchanged")
    await close_all(mentor, student, watcher, late)


# --- the mentor role --------------------------------------------------------------------------


FULLWIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def token_shapes(genuine: str) -> dict[str, str]:
    v, session, expiry, sig = genuine.split(".")
    return {
        "truncated": genuine[: len(genuine) // 2],
        "signature cut by one": genuine[:-1],
        "signature extended": genuine + "A",
        "extra dot": genuine + ".",
        "extra part": genuine + ".x",
        "dots only": "...",
        "empty parts": "v1...",
        "no version": f"{session}.{expiry}.{sig}",
        "version v2": f"v2.{session}.{expiry}.{sig}",
        "upper-case session": f"v1.{session.upper()}.{expiry}.{sig}",
        "expiry bumped": f"v1.{session}.{int(expiry) + 1}.{sig}",
        "expiry with leading zero": f"v1.{session}.0{expiry}.{sig}",
        "signature padded": genuine + "=",
        "non-ASCII": genuine[:-1] + "é",
        "fullwidth digits": f"v1.{session}.{expiry.translate(FULLWIDTH)}.{sig}",
        "very long": genuine + "A" * 5000,
        "percent-encoded dots": genuine.replace(".", "%2E"),
        "nul inside": genuine[:5] + "%00" + genuine[5:],
    }


async def test_mentor_role_cannot_be_taken_with_bad_tokens(
    hblocks: Blocks, hgw: list[str], hfleet: Fleet
) -> None:
    block, other = hblocks.new(), hblocks.new()
    mentor = await join(hgw[0], block.id, client_id=unique_client())
    elsewhere = await join(hgw[1], other.id, client_id=mentor.client_id)  # same client id!
    token, client_id = mentor.token, mentor.client_id
    assert token and client_id and elsewhere.token and elsewhere.role == "mentor"
    session = str(mentor.last("welcome")["session"])  # type: ignore[index]
    secret = hfleet.env["TOKEN_SECRET"].encode()
    now = int(time.time())
    attempts: dict[str, tuple[str, str | None]] = {
        name: (client_id, bad) for name, bad in token_shapes(token).items()
    }
    attempts |= {
        "forged with another key": (
            client_id,
            tokens.issue(b"guess", block.id, session, client_id, now + 60),
        ),
        "expired": (client_id, tokens.issue(secret, block.id, session, client_id, now - 1)),
        "other room, same client id": (client_id, elsewhere.token),
        "other session": (
            client_id,
            tokens.issue(secret, block.id, "ab" * 12, client_id, now + 60),
        ),
        "genuine token, other client id": (unique_client(), token),
        "replayed client id, no token": (client_id, None),
    }
    for what, (cid, tok) in attempts.items():
        query = f"?client={cid}" + ("&token=" + urllib.parse.quote(tok, safe="") if tok else "")
        sock = await raw_connect(hgw[1], f"/ws/rooms/{block.id}{query}")
        # docs/security.md: every one of these joins, as a plain student (a 500, a 4xx
        # or a dropped connection would be a bug, not a refusal).
        assert sock.handshake.status == 101, (what, sock.handshake)
        welcome = await sock.read_until("welcome")
        sock.abort()
        assert welcome["role"] == "student", what
        assert welcome["resumeToken"] is None, what
    # Positive control: the genuine token, from a second socket, is the mentor.
    again = await join(hgw[1], block.id, client_id=client_id, token=token)
    assert again.role == "mentor"
    print(f"{len(attempts)} bad tokens: all joined as a student")
    await close_all(mentor, elsewhere, again)


async def test_token_of_a_closed_session_does_not_return(hblocks: Blocks, hgw: list[str]) -> None:
    block = hblocks.new()
    first = await join(hgw[0], block.id, client_id=unique_client())
    token, client_id = first.token, first.client_id
    await first.close()
    # The room closes after the grace (nobody else was in it: at once).
    newcomer = await join(hgw[1], block.id)
    await wait_for(lambda: newcomer.closed.is_set() or newcomer.role == "mentor", GRACE + 5)
    if newcomer.role != "mentor":  # it joined during the grace as a student: wait, retry
        newcomer = await join(hgw[1], block.id)
    assert newcomer.role == "mentor"
    back = await join(hgw[0], block.id, client_id=client_id, token=token)
    assert back.role == "student"
    await close_all(newcomer, back)


# --- cross-site websocket hijacking -----------------------------------------------------------


@pytest.mark.parametrize(
    "origin",
    [
        "http://evil.example",
        "null",
        "http://good.example.evil.example",
        "http://evil.example/http://good.example",
        "https://good.example",
        "http://good.example:8080",
        "HTTP://GOOD.EXAMPLE",
        "",
    ],
)
async def test_foreign_origin_is_refused_with_403(
    hblocks: Blocks, hgw: list[str], origin: str
) -> None:
    block = hblocks.new()
    with pytest.raises(InvalidStatus) as refused:
        async with connect(f"{hgw[0]}/{block.id}", additional_headers={"Origin": origin}):
            pass
    response = refused.value.response
    assert response.status_code == 403
    assert orjson.loads(response.body)["error"]["code"] == "origin_forbidden"


async def test_allowed_origin_and_no_origin_are_served(hblocks: Blocks, hgw: list[str]) -> None:
    block = hblocks.new()
    browser = await join(hgw[0], block.id, origin="http://good.example")
    tool = await join(hgw[1], block.id)  # no Origin header: not a browser
    assert (browser.role, tool.role) == ("mentor", "student")
    tool.type_at_end("ok")
    await wait_for(lambda: "ok" in browser.value, 5)
    await close_all(browser, tool)


# --- solution secrecy on the socket -----------------------------------------------------------


async def test_solution_never_on_the_wire_until_typed(hblocks: Blocks, hgw: list[str]) -> None:
    marker = "SECRET-" + uuid.uuid4().hex
    block = hblocks.new(solution=f"function add(a, b) {{\n  return a + b; // {marker}\n}}\n")
    clients = [
        RoomClient(hgw[0], block.id, name="mentor"),
        RoomClient(hgw[1], block.id, name="s1"),
        RoomClient(hgw[0], block.id, name="s2"),
        RoomClient(hgw[1], block.id, role="watcher", name="w"),
    ]
    captured: dict[str, list[bytes]] = {c.name: [] for c in clients}
    for c in clients:
        original = c._on_frame

        async def spy(ws: object, frame: bytes, _c: RoomClient = c, _o: object = original) -> None:
            captured[_c.name].append(frame)
            await _o(ws, frame)  # type: ignore[operator]

        c._on_frame = spy  # type: ignore[method-assign]
        await c.connect()
    mentor, s1, s2, w = clients
    await s1.set_awareness('{"user":{"name":"s1"}}')
    s2.type_at_end("// almost")
    s1.set_text(block.solution.replace(marker, "not yet"))
    await wait_for(lambda: all("not yet" in c.value for c in clients), 5)
    await asyncio.sleep(scaled(0.3))  # give a wrong solved/leak every chance to arrive
    frames = [f for fs in captured.values() for f in fs]
    assert not any(marker.encode() in f for f in frames)
    assert all(c.count("solved") == 0 for c in clients)
    s1.set_text(block.solution)  # typing the solution is the only way it appears
    await wait_for(lambda: all(c.count("solved") == 1 for c in clients), 5)
    await mentor.close()
    await wait_for(lambda: all(c.closed.is_set() for c in (s1, s2, w)), GRACE + 5)
    for c in (s1, s2, w):
        assert c.close_code == CloseCode.ROOM_CLOSED
        events = [e for e in c.events if e["type"] in ("solved", "room-closed")]
        assert events == [{"type": "solved"}, {"type": "room-closed", "reason": "mentor-left"}]
        assert all(marker not in orjson.dumps(e).decode() for e in c.events)
    total = sum(len(fs) for fs in captured.values())
    print(f"captured {total} frames from 4 clients over a whole session: no solution leaked")


async def test_error_texts_do_not_quote_input(hblocks: Blocks, hgw: list[str]) -> None:
    block = hblocks.new()
    mentor = await join(hgw[0], block.id)
    marker = b"QUOTE-ME-" + uuid.uuid4().hex.encode()
    for frame in (
        b"\x07" + marker,
        protocol.sync_update(marker),
        protocol.awareness_message(marker),
    ):
        sock = await raw_join(hgw[1], block.id)
        await sock.send(frame)
        reader = sock.reader
        code = await sock.until_closed(5)
        assert code == CloseCode.BAD_REQUEST
        del reader
    # The close reason is in the close frame: read it raw once more to check its text.
    sock = await raw_join(hgw[1], block.id)
    await sock.send(b"\x07" + marker)
    while True:
        op, data = await sock.read_frame()
        if op == 8:
            break
    sock.abort()
    reason = data[2:]
    print(f"close reason for a bad frame: {reason!r}")
    assert marker not in reason and len(reason) <= 123
    await mentor.close()


# --- exhausting a gateway ---------------------------------------------------------------------


async def test_connections_per_address_limit(hblocks: Blocks, hfleet: Fleet) -> None:
    gateway = hfleet.gateways[1]
    url = gateway.ws_url + "/ws/rooms"
    limit = int(SMALL_LIMITS["MAX_CONNECTIONS_PER_IP"])  # type: ignore[call-overload]
    await wait_for(lambda: scrape(gateway.url)["coderoom_gateway_connections"] == 0, 10)
    rooms = [hblocks.new() for _ in range(limit // 4)]
    held = []
    for block in rooms:
        for i in range(4):  # a mentor and three students: under the room cap of 5
            held.append(await join(url, block.id, role="watcher" if i == 3 else None))
    assert len(held) == limit and all(c.connected for c in held)
    extra = await join(url, rooms[0].id)
    await wait_for(extra.closed.is_set, 5)
    # Forwarding headers are not trusted (TRUST_PROXY_HEADERS is off): still this address.
    spoofed = await join(url, rooms[0].id, headers={"X-Forwarded-For": "203.0.113.9"})
    await wait_for(spoofed.closed.is_set, 5)
    raw = await raw_connect(
        gateway.ws_url,
        f"/ws/rooms/{rooms[0].id}",
        headers={"X-Real-IP": "203.0.113.10", "Forwarded": "for=203.0.113.10"},
    )
    raw_code = await raw.until_closed(5)
    print(
        f"{limit} sockets held; the extra closed with {extra.close_code}, "
        f"X-Forwarded-For-spoofed {spoofed.close_code}, X-Real-IP/Forwarded-spoofed {raw_code}"
    )
    assert extra.close_code == spoofed.close_code == raw_code == CloseCode.RATE_LIMITED
    held[1].type_at_end("still here")  # the others are unaffected
    await wait_for(lambda: all("still here" in c.value for c in held[:4]), 5)
    await held[2].close()
    await wait_for(lambda: scrape(gateway.url)["coderoom_gateway_connections"] == limit - 1, 5)
    replacement = await join(url, rooms[0].id)  # a freed slot is usable again
    assert replacement.connected
    other_gw = await join(hfleet.gateways[0].ws_url + "/ws/rooms", rooms[1].id)
    assert other_gw.connected  # the limit is per gateway
    await close_all(*held, replacement, other_gw)


async def test_room_member_cap_and_the_mentor_always_gets_in(
    hblocks: Blocks, hgw: list[str]
) -> None:
    cap = int(SMALL_LIMITS["MAX_ROOM_MEMBERS"])  # type: ignore[call-overload]
    block = hblocks.new()
    mentor = await join(hgw[0], block.id, client_id=unique_client())
    members = [
        await join(hgw[i % 2], block.id, role="watcher" if i == 0 else None) for i in range(cap)
    ]
    assert [m.role for m in members] == ["watcher"] + ["student"] * (cap - 1)
    extra_student = await join(hgw[1], block.id)
    extra_watcher = await join(hgw[0], block.id, role="watcher")
    await wait_for(lambda: extra_student.closed.is_set() and extra_watcher.closed.is_set(), 5)
    assert extra_student.close_code == extra_watcher.close_code == CloseCode.ROOM_FULL
    # The mentor refreshing into a full room keeps it (cap counts students + watchers).
    token, client_id = mentor.token, mentor.client_id
    await mentor.close()
    back = await join(hgw[1], block.id, client_id=client_id, token=token)
    assert back.role == "mentor" and back.connected
    # A forged token in a full room is just another extra member.
    forged = await join(hgw[1], block.id, client_id=client_id, token=token[:-2] + "xx")  # type: ignore[index]
    await wait_for(forged.closed.is_set, 5)
    assert forged.close_code == CloseCode.ROOM_FULL
    members[1].type_at_end("full but fine")
    await wait_for(lambda: "full but fine" in back.value, 5)
    print(f"cap {cap}: extra student/watcher got {CloseCode.ROOM_FULL}; the mentor got back in")
    await close_all(back, *members)
