"""services/gateway/chat.py: the pure checks, decisions and history of chat and hints."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from services.gateway.chat import (
    MAX_CHAT_FRAME,
    MAX_TEXT_CHARS,
    ChatRefused,
    archive_of,
    control_type,
    decide,
    history,
    parse_message,
)
from services.gateway.eventrelay import Incoming
from shared import protocol
from shared.protocol import CloseCode, Role
from shared.ywire import encode_var_bytes

ANCHOR = "AZoFAwA="


def frame(message: dict[str, Any] | bytes) -> bytes:
    raw = message if isinstance(message, bytes) else orjson.dumps(message)
    return b"\x64" + encode_var_bytes(raw)


def event_of(data: bytes) -> dict[str, Any]:
    return dict(protocol.decode_control(data))


GOOD: dict[str, dict[str, Any]] = {
    "chat": {"type": "chat", "text": "hi <b>there</b> 🎉"},
    "hint": {"type": "hint", "text": "look", "anchor": ANCHOR, "line": 3},
    "hint-resolve": {"type": "hint-resolve", "id": "0123456789abcdef"},
    "follow-me": {"type": "follow-me", "on": True},
}


@pytest.mark.parametrize("kind", list(GOOD))
def test_good_messages_parse(kind: str) -> None:
    assert control_type(frame(GOOD[kind])) == kind
    assert parse_message(frame(GOOD[kind]))["type"] == kind


def test_text_limit_counts_characters() -> None:
    assert parse_message(frame({"type": "chat", "text": "🎉" * MAX_TEXT_CHARS}))["text"]
    with pytest.raises(ChatRefused):
        parse_message(frame({"type": "chat", "text": "a" * (MAX_TEXT_CHARS + 1)}))


@pytest.mark.parametrize(
    "raw",
    [
        frame(b'{"type":"chat","text":"' + b"x" * MAX_CHAT_FRAME + b'"}'),
        frame(b'{"type":"chat","text":"\xff"}'),
        frame(b'{"type":"chat","text":"\\udc00"}'),
        frame(b'{"type":"chat"'),
        frame(b"[1]"),
        frame({"type": "chat"}),
        frame({"type": "chat", "text": ""}),
        frame({"type": "chat", "text": " \n\t"}),
        frame({"type": "chat", "text": 5}),
        frame({"type": "chat", "text": "x", "name": "Grace"}),
        frame({"type": "chat", "text": "x", "role": "mentor"}),
        frame({"type": "hint", "text": "x", "anchor": "%%%", "line": 1}),
        frame({"type": "hint", "text": "x", "anchor": "", "line": 1}),
        frame({"type": "hint", "text": "x", "anchor": ANCHOR, "line": 0}),
        frame({"type": "hint", "text": "x", "anchor": ANCHOR, "line": True}),
        frame({"type": "hint", "text": "x", "anchor": ANCHOR, "line": "3"}),
        frame({"type": "hint-resolve", "id": "0123456789ABCDEF"}),
        frame({"type": "follow-me", "on": 1}),
        b"\x64\x05" + orjson.dumps(GOOD["chat"]),
        b"\x64",
    ],
)
def test_bad_messages_are_refused(raw: bytes) -> None:
    with pytest.raises(ChatRefused):
        parse_message(raw)
    decision = decide(
        Incoming(
            raw,
            role="student",
            client_id="c",
            awareness_ids=[],
            awareness_states=[],
            allowed=True,
            event_id="e",
            at_ms=1,
        )
    )
    assert decision.close == CloseCode.BAD_REQUEST and decision.event is None


def test_control_type_leaves_runs_and_unknown_types_alone() -> None:
    assert control_type(frame({"type": "run-result"})) is None
    assert control_type(frame({"type": "welcome"})) is None
    assert control_type(frame(b"not json")) is None


def _decide(kind: str, role: Role, allowed: bool | None = True) -> Any:
    return decide(
        Incoming(
            frame(GOOD[kind]),
            role=role,
            client_id="c",
            awareness_ids=[7, 3],
            awareness_states=['{"user":{"name":"Grace"}}'],
            allowed=allowed,
            event_id="abc",
            at_ms=99,
        )
    )


@pytest.mark.parametrize(
    ("kind", "role", "relayed"),
    [
        ("chat", "mentor", True),
        ("chat", "student", True),
        ("chat", "watcher", False),
        ("hint", "mentor", True),
        ("hint", "student", False),
        ("hint", "watcher", False),
        ("hint-resolve", "mentor", True),
        ("hint-resolve", "student", False),
        ("follow-me", "mentor", True),
        ("follow-me", "student", False),
    ],
)
def test_who_may_send_what(kind: str, role: Role, relayed: bool) -> None:
    decision = _decide(kind, role)
    assert decision.close is None
    if relayed:
        assert decision.event is not None and decision.reply is None
    else:
        assert decision.event is None
        refusal = event_of(decision.reply)
        assert (refusal["type"], refusal["of"], refusal["code"]) == ("refused", kind, "forbidden")


def test_author_comes_from_the_socket() -> None:
    message = orjson.loads(_decide("chat", "student").event)["message"]
    assert message == {
        "id": "abc",
        "name": "Grace",
        "role": "student",
        "text": "hi <b>there</b> 🎉",
        "at": 99,
    }
    follow = orjson.loads(_decide("follow-me", "mentor").event)
    assert follow["awarenessIds"] == [3, 7] and follow["role"] == "mentor"


def test_the_rate() -> None:
    refused = _decide("chat", "student", allowed=False)
    assert refused.event is None and event_of(refused.reply)["code"] == "rate-limited"
    flood = _decide("chat", "student", allowed=None)
    assert flood.close == CloseCode.RATE_LIMITED


def _entry(session: str, event: dict[str, Any]) -> bytes:
    return session.encode() + b"\x00" + orjson.dumps(event)


def test_history_folds_resolutions_and_skips_other_sessions() -> None:
    hint = {"id": "h1", "name": "G", "role": "mentor", "text": "t", "anchor": ANCHOR, "line": 2}
    chat = [
        _entry("old", {"type": "chat", "message": {"id": "m0", "text": "old"}}),
        _entry("s", {"type": "chat", "message": {"id": "m1", "text": "new"}}),
    ]
    hints = [
        _entry("s", {"type": "hint", "hint": {**hint, "at": 1}}),
        _entry("s", {"type": "hint", "hint": {**hint, "id": "h2", "at": 2}}),
        _entry("s", {"type": "hint-resolved", "id": "h1", "at": 5}),
        _entry("s", {"type": "hint-resolved", "id": "gone", "at": 6}),
    ]
    out = event_of(history(chat, hints, "s") or b"")
    assert [m["id"] for m in out["messages"]] == ["m1"]
    assert [(h["id"], h["resolvedAt"]) for h in out["hints"]] == [("h1", 5), ("h2", None)]
    assert history(chat[:1], [], "s") is None
    assert archive_of([], [], "s") == {"messages": [], "hints": []}
    assert archive_of(chat, hints, "s")["hints"][0]["resolvedAt"] == 5
