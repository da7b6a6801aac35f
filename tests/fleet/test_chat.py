"""Room chat, line hints and "follow me" with raw clients on two real gateways and a real
Redis (docs/protocol.md, "Chat and hints"): relayed to everyone on every gateway with
the author taken from the socket, kept (bounded) for late joiners and reconnecting
mentors, watchers' and students' forbidden messages refused with a ``refused`` event,
bad messages closing only their sender (4400), a flood closing it (4429), awareness for
another socket's Yjs id refused (4400), and the archive carrying chat and hints."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import orjson
import pytest

from services.gateway.chat import CHAT_BURST, CHAT_KEPT, MAX_CHAT_FRAME
from services.gateway.eventrelay import FLOOD
from shared import protocol
from shared.keys import Keys
from shared.protocol import CloseCode
from shared.ywire import encode_awareness_update, encode_var_bytes
from tests.fleet.conftest import GRACE, Blocks
from tests.infra import Fleet
from tests.yclient import RoomClient, wait_for

pytestmark = [pytest.mark.fleet]

ANCHOR = base64.b64encode(b"\x01\x9a\x05\x03\x00").decode()  # any relative position


def control(message: dict[str, Any] | bytes) -> bytes:
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    return b"\x64" + encode_var_bytes(raw)


def chat(text: str) -> bytes:
    return control({"type": "chat", "text": text})


def hint(text: str, line: int = 2) -> bytes:
    return control({"type": "hint", "text": text, "anchor": ANCHOR, "line": line})


async def join(url: str, block_id: str, **kw: Any) -> RoomClient:
    return await RoomClient(url, block_id, **kw).connect()


def said(client: RoomClient) -> list[dict[str, Any]]:
    """Chat messages a client has seen, history included, in order (a message may come
    both live and in the history of a joiner: kept once, by id)."""
    out: dict[str, dict[str, Any]] = {}
    for event in client.events:
        if event["type"] == "chat":
            out.setdefault(event["message"]["id"], event["message"])
        elif event["type"] == "chat-history":
            out.update({m["id"]: m for m in event["messages"] if m["id"] not in out})
    return list(out.values())


def hints_of(client: RoomClient) -> dict[str, dict[str, Any]]:
    """Hints a client knows, by id, with their resolution."""
    out: dict[str, dict[str, Any]] = {}
    for event in client.events:
        if event["type"] == "hint":
            out[event["hint"]["id"]] = {**event["hint"], "resolvedAt": None}
        elif event["type"] == "hint-resolved":
            out[event["id"]]["resolvedAt"] = event["at"]
        elif event["type"] == "chat-history":
            out.update({h["id"]: h for h in event["hints"]})
    return out


def refusals(client: RoomClient) -> list[dict[str, Any]]:
    return [e for e in client.events if e["type"] == "refused"]


async def close_all(*clients: RoomClient) -> None:
    await asyncio.gather(*(c.close() for c in clients))


async def named(client: RoomClient, name: str) -> None:
    await client.set_awareness(orjson.dumps({"user": {"name": name}}).decode())


async def test_chat_and_hints_reach_everyone_and_late_joiners(
    blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    watcher = await join(gw[0], block.id, role="watcher")
    await named(student, "Ada")
    await named(mentor, "Grace")
    await wait_for(lambda: len(watcher.awareness) == 2)
    await student.send_raw(chat("is line 2 right? <script>alert(1)</script>"))
    for client in (mentor, student, watcher):
        await wait_for(lambda c=client: len(said(c)) == 1)  # type: ignore[misc]
    message = said(watcher)[0]
    assert message["name"] == "Ada" and message["role"] == "student"
    assert message["text"] == "is line 2 right? <script>alert(1)</script>"  # as sent
    assert said(mentor) == said(student) == [message]
    assert "clientId" not in message  # a client's own id is not shown to others
    await mentor.send_raw(hint("return, not log", line=2))
    for client in (mentor, student, watcher):
        await wait_for(lambda c=client: len(hints_of(c)) == 1)  # type: ignore[misc]
    (the_hint,) = hints_of(student).values()
    assert the_hint["name"] == "Grace" and the_hint["role"] == "mentor"
    assert the_hint["anchor"] == ANCHOR and the_hint["line"] == 2
    await mentor.send_raw(chat("yes"))
    await wait_for(lambda: len(said(student)) == 2)
    # A late joiner on the other gateway gets the history right after its welcome.
    late = await join(gw[1], block.id, role="watcher")
    await wait_for(lambda: late.count("chat-history") == 1)
    assert [e["type"] for e in late.events].index("welcome") == 0
    assert [m["id"] for m in said(late)] == [m["id"] for m in said(mentor)]
    assert list(hints_of(late)) == list(hints_of(mentor))
    # Resolving: everyone hears it, and a joiner gets the hint marked resolved.
    hint_id = the_hint["id"]
    await mentor.send_raw(control({"type": "hint-resolve", "id": hint_id}))
    await wait_for(lambda: hints_of(student)[hint_id]["resolvedAt"] is not None)
    await wait_for(lambda: hints_of(late)[hint_id]["resolvedAt"] is not None)
    later = await join(gw[0], block.id, role="watcher")
    await wait_for(lambda: later.count("chat-history") == 1)
    assert hints_of(later)[hint_id]["resolvedAt"] is not None
    # A second resolution, or one of an unknown hint, is not relayed.
    await mentor.send_raw(control({"type": "hint-resolve", "id": hint_id}))
    await mentor.send_raw(control({"type": "hint-resolve", "id": "0" * 16}))
    await mentor.send_raw(chat("marker"))
    await wait_for(lambda: said(student)[-1]["text"] == "marker")
    assert student.count("hint-resolved") == 1
    await close_all(mentor, student, watcher, late, later)


async def test_a_reconnecting_mentor_gets_the_history(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    await student.send_raw(chat("hello"))
    await mentor.send_raw(hint("look here", line=1))
    await wait_for(lambda: len(said(mentor)) == 1 and len(hints_of(mentor)) == 1)
    token, client_id = mentor.token, mentor.client_id
    await mentor.close()
    back = await join(gw[1], block.id, token=token, client_id=client_id)
    assert back.role == "mentor"
    await wait_for(lambda: back.count("chat-history") == 1)
    assert [m["text"] for m in said(back)] == ["hello"]
    assert [h["text"] for h in hints_of(back).values()] == ["look here"]
    await close_all(back, student)


async def test_who_may_send_what(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    watcher = await join(gw[1], block.id, role="watcher")
    await watcher.send_raw(chat("watchers read only"))
    await student.send_raw(hint("students do not hint"))
    await student.send_raw(control({"type": "follow-me", "on": True}))
    await wait_for(lambda: len(refusals(watcher)) == 1 and len(refusals(student)) == 2)
    assert refusals(watcher)[0]["of"] == "chat" and refusals(watcher)[0]["code"] == "forbidden"
    assert [(r["of"], r["code"]) for r in refusals(student)] == [
        ("hint", "forbidden"),
        ("follow-me", "forbidden"),
    ]
    await mentor.send_raw(chat("after"))
    await wait_for(lambda: len(said(watcher)) == 1)
    assert [m["text"] for m in said(watcher)] == ["after"]
    assert not hints_of(mentor) and mentor.count("follow-me") == 0
    assert watcher.connected and student.connected
    await close_all(mentor, student, watcher)


async def test_follow_me_names_the_mentors_own_awareness_ids(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    await named(mentor, "Grace")
    await wait_for(lambda: len(student.awareness) == 1)
    await mentor.send_raw(control({"type": "follow-me", "on": True}))
    await wait_for(lambda: student.count("follow-me") == 1)
    event = student.last("follow-me")
    assert event is not None
    assert event["on"] is True and event["role"] == "mentor" and event["name"] == "Grace"
    assert event["awarenessIds"] == [mentor.doc.client_id]
    await mentor.send_raw(control({"type": "follow-me", "on": False}))
    await wait_for(lambda: student.count("follow-me") == 2)
    # Not kept: a joiner is not dragged along by an old request.
    late = await join(gw[0], block.id)
    await mentor.send_raw(chat("marker"))
    await wait_for(lambda: len(said(late)) == 1)
    assert late.count("follow-me") == 0
    await close_all(mentor, student, late)


BAD = {
    "oversized": control(b'{"type":"chat","text":"' + b"x" * MAX_CHAT_FRAME + b'"}'),
    "over 1000 characters": chat("é" * 1001),
    "empty": chat("   \n"),
    "malformed": control(b'{"type": "chat", "text": '),
    "invalid utf-8": control(b'{"type":"chat","text":"\xc3("}'),
    "lone surrogate": control(b'{"type":"chat","text":"\\ud800"}'),
    "text not a string": control({"type": "chat", "text": ["a"]}),
    "author given": control({"type": "chat", "text": "hi", "name": "Mentor"}),
    "role given": control({"type": "chat", "text": "hi", "role": "mentor"}),
    "length lies": b"\x64\x05" + b'{"type":"chat","text":"hi"}',
}


@pytest.mark.parametrize("case", list(BAD))
async def test_bad_chat_messages_close_the_sender_only(
    blocks: Blocks, gw: list[str], case: str
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    sender = await join(gw[1], block.id)
    other = await join(gw[1], block.id)
    await sender.send_raw(BAD[case])
    await sender.wait_for(sender.closed.is_set, 5)
    assert sender.close_code == CloseCode.BAD_REQUEST
    other.type_at_end("// still here\n")
    await wait_for(lambda: mentor.value.endswith("// still here\n"))
    await other.send_raw(chat("after"))
    await wait_for(lambda: len(said(mentor)) == 1)
    assert [m["text"] for m in said(mentor)] == ["after"]
    assert other.connected and mentor.connected
    await close_all(mentor, sender, other)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "hint", "text": "x", "anchor": "not base64!", "line": 1},
        {"type": "hint", "text": "x", "anchor": ANCHOR, "line": 0},
        {"type": "hint", "text": "x", "anchor": "A" * 200, "line": 1},
        {"type": "hint-resolve", "id": "../../etc"},
        {"type": "follow-me", "on": "yes"},
    ],
)
async def test_bad_mentor_messages_close_the_mentor_with_4400(
    blocks: Blocks, gw: list[str], message: dict[str, Any]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    await mentor.send_raw(control(message))
    await mentor.wait_for(mentor.closed.is_set, 5)
    assert mentor.close_code == CloseCode.BAD_REQUEST
    assert not hints_of(student) and student.count("follow-me") == 0
    await close_all(mentor, student)


async def test_too_frequent_messages_are_refused_and_a_flood_is_closed(
    blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    for i in range(CHAT_BURST + 3):
        await student.send_raw(chat(f"m{i}"))
    await wait_for(lambda: len(refusals(student)) >= 2)
    assert {(r["of"], r["code"]) for r in refusals(student)} == {("chat", "rate-limited")}
    await wait_for(lambda: len(said(mentor)) >= CHAT_BURST)
    await mentor.send_raw(chat("mentor"))
    await wait_for(lambda: bool(said(student)) and said(student)[-1]["text"] == "mentor")
    relayed = [m["text"] for m in said(mentor) if m["role"] == "student"]
    # The burst went through (one more if a second passed meanwhile on a slow machine).
    assert relayed[:CHAT_BURST] == [f"m{i}" for i in range(CHAT_BURST)]
    assert len(relayed) <= CHAT_BURST + 1 and student.connected
    for _ in range(FLOOD):
        await student.send_raw(chat("flood"))
    await student.wait_for(student.closed.is_set, 5)
    assert student.close_code == CloseCode.RATE_LIMITED
    assert mentor.connected
    await close_all(mentor, student)


async def test_history_stays_bounded_under_a_flood(
    room_fleet: Fleet, blocks: Blocks, gw: list[str]
) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    # Many students, each within its own rate: the room's list is what must stay bounded.
    students = [await join(gw[i % 2], block.id) for i in range(30)]
    text = "z" * 1000
    keys = Keys(room_fleet.env["REDIS_PREFIX"]).room(block.id)
    redis = room_fleet.redis.client()
    try:
        sizes = []
        for burst in range(3):
            for s in students:
                for _ in range(CHAT_BURST if burst == 0 else 1):
                    await s.send_raw(chat(text))
            sent = 30 * (CHAT_BURST + burst)

            def settled(n: int = sent) -> bool:  # every message relayed or refused
                return len(said(mentor)) + sum(len(refusals(s)) for s in students) == n

            await wait_for(settled, 30)
            await wait_for(lambda: redis.llen(keys.chat) == CHAT_KEPT, 10)
            sizes.append(redis.memory_usage(keys.chat))
        assert len(said(mentor)) > CHAT_KEPT + 30
        # Flat: the list holds the last CHAT_KEPT messages (~1.1 KB each here), whatever
        # came before (its memory differs a little with how Redis packs the list).
        assert max(sizes) <= min(sizes) * 1.25 and max(sizes) < CHAT_KEPT * 1400, sizes
        late = await join(gw[1], block.id, role="watcher")
        await wait_for(lambda: late.count("chat-history") == 1)
        assert len(said(late)) == CHAT_KEPT
        assert [m["id"] for m in said(late)] == [m["id"] for m in said(mentor)][-CHAT_KEPT:]
    finally:
        redis.close()
    await close_all(mentor, late, *students)


async def test_the_author_cannot_be_forged(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    ada = await join(gw[1], block.id)
    eve = await join(gw[0], block.id)
    await named(mentor, "Grace")
    await named(ada, "Ada")
    await wait_for(lambda: len(eve.awareness) == 2)
    # Eve announces a newer state for Ada's Yjs id (then for the mentor's): refused.
    forged = orjson.dumps({"user": {"name": "Ada"}}).decode()
    spoof = protocol.awareness_message(encode_awareness_update([(ada.doc.client_id, 9, forged)]))
    await eve.send_raw(spoof)
    await eve.wait_for(eve.closed.is_set, 5)
    assert eve.close_code == CloseCode.BAD_REQUEST
    # Nobody saw the forged state; Ada's name and messages stay hers.
    eve2 = await join(gw[1], block.id)
    await named(eve2, "Ada")  # a name is not an identity: the role and id come from the socket
    await eve2.send_raw(chat("I am Ada"))
    await ada.send_raw(chat("I am Ada too"))
    await wait_for(lambda: len(said(mentor)) == 2)
    assert all(m["role"] == "student" for m in said(mentor))
    spoof_mentor = protocol.awareness_message(
        encode_awareness_update([(mentor.doc.client_id, 9, '{"user":{"name":"Mentor"}}')])
    )
    await eve2.send_raw(spoof_mentor)
    await eve2.wait_for(eve2.closed.is_set, 5)
    assert eve2.close_code == CloseCode.BAD_REQUEST
    await ada.send_raw(chat("still here"))
    await wait_for(lambda: len(said(mentor)) == 3)
    assert '"Grace"' in ada.awareness[mentor.doc.client_id]
    await close_all(mentor, ada, eve, eve2)


async def test_the_archive_carries_chat_and_hints(blocks: Blocks, gw: list[str]) -> None:
    block = blocks.new()
    mentor = await join(gw[0], block.id)
    student = await join(gw[1], block.id)
    await named(mentor, "Grace")
    await named(student, "Ada")
    await wait_for(lambda: len(student.awareness) == 1 and len(mentor.awareness) == 1)
    await student.send_raw(chat("stuck on <b>line 2</b>"))
    await mentor.send_raw(hint("use return", line=2))
    await mentor.send_raw(hint("and a semicolon", line=3))
    await wait_for(lambda: len(hints_of(student)) == 2 and len(said(student)) == 1)
    first = next(iter(hints_of(student)))
    await mentor.send_raw(control({"type": "hint-resolve", "id": first}))
    await wait_for(lambda: student.count("hint-resolved") == 1)
    await mentor.close()
    await wait_for(lambda: student.closed.is_set(), GRACE + 5)

    def archived() -> bool:
        r = blocks.admin_get(f"/api/code-blocks/{block.id}/sessions")
        return r.status_code == 200 and len(r.json()) == 1

    await wait_for(archived, 10)
    record = blocks.admin_get(f"/api/code-blocks/{block.id}/sessions").json()[0]
    ((message),) = record["chat"]
    assert (message["name"], message["role"]) == ("Ada", "student")
    assert message["text"] == "stuck on <b>line 2</b>" and message["at"]
    assert [(h["text"], h["line"], h["name"]) for h in record["hints"]] == [
        ("use return", 2, "Grace"),
        ("and a semicolon", 3, "Grace"),
    ]
    assert record["hints"][0]["resolvedAt"] is not None
    assert record["hints"][1]["resolvedAt"] is None
    await close_all(student)
