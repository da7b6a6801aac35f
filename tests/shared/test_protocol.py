"""shared/protocol.py: framing, control events and the close-code registry.

Reference bytes marked "lib0" were written by lib0's own encoder (web/node_modules/lib0,
``encoding.writeVarUint`` + ``encoding.writeVarString``) and pasted here, so these tests
compare against what a browser would send and expect, not against our own encoder.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from pycrdt import Awareness, Doc, Text

from shared import protocol
from shared.protocol import (
    CloseCode,
    Message,
    MessageType,
    ProtocolError,
    SyncType,
    decode_control,
    decode_message,
    should_reconnect,
)
from tests.yclient import text_doc

# --- sync, awareness, auth frames -----------------------------------------------------------------


def test_sync_frames_have_the_y_protocols_layout() -> None:
    # y-protocols: varUint messageSync(0), varUint sub-type, varUint8Array payload.
    assert protocol.sync_step1(b"\x00") == b"\x00\x00\x01\x00"
    assert protocol.sync_step2(b"\x00\x00") == b"\x00\x01\x02\x00\x00"
    assert protocol.sync_update(b"\x00\x00") == b"\x00\x02\x02\x00\x00"
    payload = bytes(200)  # a length above 127 takes two varUint bytes: 200 = 0xc8 0x01
    assert protocol.sync_update(payload) == b"\x00\x02\xc8\x01" + payload


@pytest.mark.parametrize(
    ("build", "sync_type"),
    [
        (protocol.sync_step1, SyncType.STEP1),
        (protocol.sync_step2, SyncType.STEP2),
        (protocol.sync_update, SyncType.UPDATE),
    ],
)
@pytest.mark.parametrize("text", ["", "x", "def main():\n    return 42\n" * 20, "Zoë 🎉"])
def test_sync_round_trip_with_real_documents(build: Any, sync_type: SyncType, text: str) -> None:
    doc = text_doc(text)
    payload = doc.get_state() if sync_type == SyncType.STEP1 else doc.get_update()
    message = decode_message(build(payload))
    assert message == Message(MessageType.SYNC, sync_type, payload)
    if sync_type != SyncType.STEP1:
        copy: Doc[Text] = Doc()
        copy.apply_update(message.payload)
        assert str(copy.get("code", type=Text)) == text


def test_awareness_round_trip_with_a_real_awareness_update() -> None:
    doc: Doc[Text] = Doc()
    awareness = Awareness(doc)
    awareness.set_local_state({"user": {"name": "Zoë 🎉", "color": "#30bced"}})
    update = awareness.encode_awareness_update([doc.client_id])
    frame = protocol.awareness_message(update)
    assert frame[0] == MessageType.AWARENESS
    assert decode_message(frame) == Message(MessageType.AWARENESS, None, update)


def test_permission_denied_is_auth_subtype_0_with_a_lib0_var_string() -> None:
    frame = protocol.permission_denied("Zoë 🎉 read-only")
    # lib0: writeVarUint(2); writeVarUint(0); writeVarString("Zoë 🎉 read-only")
    assert frame == bytes.fromhex("0200135a6fc3ab20f09f8e8920726561642d6f6e6c79")
    message = decode_message(frame)
    assert message.type == MessageType.AUTH
    assert message.sync_type is None
    assert message.payload == b"\x00" + frame[2:]


def test_query_awareness_and_auth_from_a_client_decode() -> None:
    assert decode_message(b"\x03") == Message(MessageType.QUERY_AWARENESS, None, b"")
    assert decode_message(b"\x02\x00\x01x") == Message(MessageType.AUTH, None, b"\x00\x01x")


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        pytest.param(b"", "truncated varUint", id="empty"),
        pytest.param(b"\x80", "truncated varUint", id="truncated-type-varint"),
        pytest.param(b"\xff" * 8 + b"\x01", "longer than 8 bytes", id="overlong-type-varint"),
        pytest.param(b"\x00", "truncated varUint", id="sync-without-subtype"),
        pytest.param(b"\x00\x02", "truncated varUint", id="sync-without-length"),
        pytest.param(b"\x00\x02\x85", "truncated varUint", id="sync-truncated-length"),
        pytest.param(b"\x00\x02\x05ab", "does not match", id="sync-length-too-long"),
        pytest.param(b"\x00\x02\x01ab", "does not match", id="sync-length-too-short"),
        pytest.param(b"\x00\x01\x00\x00", "does not match", id="step2-trailing-byte"),
        pytest.param(b"\x00\x03\x02\x00\x00", "unknown sync message 3", id="sync-subtype-3"),
        pytest.param(b"\x00\x80\x01\x00", "unknown sync message 128", id="sync-subtype-128"),
        pytest.param(b"\x01", "truncated varUint", id="awareness-without-length"),
        pytest.param(b"\x01\x05\x00", "does not match", id="awareness-length-too-long"),
        pytest.param(b"\x01\x00\x00", "does not match", id="awareness-length-too-short"),
        pytest.param(b"\x07", "unknown message type 7", id="type-7"),
        pytest.param(b"\x04\x00", "unknown message type 4", id="type-4"),
        pytest.param(protocol.SOLVED, "unknown message type 100", id="control-from-client"),
        pytest.param(b"\x64", "unknown message type 100", id="bare-type-100"),
    ],
)
def test_decode_message_rejects_malformed_frames(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_message(frame)


def test_protocol_error_is_a_value_error() -> None:
    assert issubclass(ProtocolError, ValueError)


# --- control events -------------------------------------------------------------------------------


def test_control_frame_matches_lib0_for_non_ascii_json() -> None:
    frame = protocol.control({"type": "welcome", "name": "Zoë 🎉"})
    # lib0: writeVarUint(100); writeVarString(JSON.stringify({type:"welcome",name:"Zoë 🎉"}))
    assert frame == bytes.fromhex(
        "64257b2274797065223a2277656c636f6d65222c226e616d65223a225a6fc3ab20f09f8e89227d"
    )
    # 37 UTF-8 bytes, although the JSON text is only 32 characters long.
    body = orjson.dumps({"type": "welcome", "name": "Zoë 🎉"})
    assert frame[1] == len(body) == 37 != len(body.decode())
    assert decode_control(frame) == {"type": "welcome", "name": "Zoë 🎉"}


def test_control_frame_with_a_two_byte_length_matches_lib0() -> None:
    reason = "x" * 130 + "é"
    frame = protocol.room_closed(reason)
    # lib0: writeVarUint(100); writeVarString(JSON.stringify({type:"room-closed",reason}))
    expected = bytes.fromhex(
        "64a6017b2274797065223a22726f6f6d2d636c6f736564222c22726561736f6e223a22"
        + "78" * 130
        + "c3a9227d"
    )
    assert frame == expected
    assert decode_control(frame) == {"type": "room-closed", "reason": reason}


def test_welcome_round_trip() -> None:
    frame = protocol.welcome(
        role="mentor",
        client_id="Zoë 🎉",
        resume_token="v1.abcdef01.1700000000.sig",
        session="abcdef01",
        block_id="64b0c0ffee0000000000beef",
        grace_seconds=7.5,
    )
    assert frame[0] == MessageType.CONTROL
    assert decode_control(frame) == {
        "type": "welcome",
        "role": "mentor",
        "clientId": "Zoë 🎉",
        "resumeToken": "v1.abcdef01.1700000000.sig",
        "session": "abcdef01",
        "blockId": "64b0c0ffee0000000000beef",
        "graceSeconds": 7.5,
    }


def test_welcome_without_a_resume_token_sends_null() -> None:
    frame = protocol.welcome(
        role="student",
        client_id="c1",
        resume_token=None,
        session="s",
        block_id="b",
        grace_seconds=0,
    )
    event = decode_control(frame)
    assert event["role"] == "student"
    assert event["resumeToken"] is None


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            protocol.presence(mentor=True, students=3, watchers=0),
            {"type": "presence", "mentor": True, "students": 3, "watchers": 0},
        ),
        (
            protocol.presence(mentor=False, students=0, watchers=12),
            {"type": "presence", "mentor": False, "students": 0, "watchers": 12},
        ),
        (protocol.SOLVED, {"type": "solved"}),
        (protocol.room_closed("mentor left"), {"type": "room-closed", "reason": "mentor left"}),
        (
            protocol.room_closed("Zoë 🎉 est partie"),
            {"type": "room-closed", "reason": "Zoë 🎉 est partie"},
        ),
    ],
)
def test_control_event_round_trips(frame: bytes, expected: dict[str, Any]) -> None:
    assert frame[0] == MessageType.CONTROL
    assert decode_control(frame) == expected


def test_stock_clients_see_control_frames_as_an_unknown_type() -> None:
    # A y-websocket client looks up messageHandlers[type]; 100 must not alias 0..3.
    assert protocol.SOLVED[0] == 100
    assert MessageType.CONTROL not in (0, 1, 2, 3)


def _control_raw(body: bytes) -> bytes:
    return b"\x64" + bytes([len(body)]) + body


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        pytest.param(protocol.sync_update(b"\x00\x00"), "not a control event", id="sync-frame"),
        pytest.param(b"\x64\x05{}", "does not match", id="length-too-long"),
        pytest.param(b"\x64\x01{}", "does not match", id="length-too-short"),
        pytest.param(_control_raw(b"[1, 2]"), "without a type", id="json-array"),
        pytest.param(_control_raw(b'"solved"'), "without a type", id="json-string"),
        pytest.param(_control_raw(b"{}"), "without a type", id="no-type"),
        pytest.param(_control_raw(b'{"type": 1}'), "without a type", id="type-not-a-string"),
        pytest.param(_control_raw(b'{"type": null}'), "without a type", id="type-null"),
    ],
)
def test_decode_control_rejects_malformed_events(frame: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        decode_control(frame)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"\x64", id="no-length"),
        pytest.param(_control_raw(b"{not json"), id="not-json"),
        pytest.param(_control_raw(b'{"type": "x"'), id="truncated-json"),
        pytest.param(b"\x64\x02\xff\xfe", id="not-utf8"),
    ],
)
def test_decode_control_raises_value_error_on_garbage(frame: bytes) -> None:
    # Not all of these are ProtocolError (orjson's and yvalidate's errors pass through),
    # but every one is a ValueError, which is what a client has to catch.
    with pytest.raises(ValueError):
        decode_control(frame)


# --- close codes ----------------------------------------------------------------------------------

# Written out by hand rather than derived from the rule, so a new code forces a decision here.
RECONNECT = {
    CloseCode.NORMAL: True,
    CloseCode.INTERNAL_ERROR: True,
    CloseCode.SERVICE_RESTART: True,  # 1012: a gateway shuts down, go to another one
    CloseCode.TRY_AGAIN_LATER: True,
    CloseCode.SLOW_CONSUMER: True,  # 4000: resync
    CloseCode.BAD_REQUEST: False,
    CloseCode.FORBIDDEN: False,
    CloseCode.UNKNOWN_BLOCK: False,
    CloseCode.ROOM_FULL: False,
    CloseCode.ROOM_CLOSED: False,  # 4410: back to the lobby
    CloseCode.DOC_TOO_LARGE: False,
    CloseCode.RATE_LIMITED: False,
    CloseCode.UNAVAILABLE: True,  # 4503: MongoDB down, try again
}


def test_every_close_code_has_a_decision() -> None:
    assert set(RECONNECT) == set(CloseCode)


@pytest.mark.parametrize("code", list(CloseCode), ids=lambda c: f"{c.name}-{c.value}")
def test_should_reconnect_for_every_close_code(code: CloseCode) -> None:
    assert should_reconnect(code) is RECONNECT[code]
    assert should_reconnect(int(code)) is RECONNECT[code]


@pytest.mark.parametrize(
    ("code", "reconnect"),
    [
        (1000, True),
        (1001, True),
        (1006, True),
        (1012, True),
        (3000, True),
        (4000, True),
        (4399, True),
        (4400, False),
        (4410, False),
        (4499, False),
        (4500, True),
        (4503, True),
        (4999, True),
    ],
)
def test_should_reconnect_range_boundaries(code: int, reconnect: bool) -> None:
    assert should_reconnect(code) is reconnect


def test_terminal_codes_mirror_http_4xx() -> None:
    for code in CloseCode:
        if not should_reconnect(code):
            assert 400 <= code - 4000 <= 499


def test_roles() -> None:
    assert protocol.ROLES == ("mentor", "student", "watcher")


def _browser_close_codes() -> dict[str, int]:
    """The ``CLOSE`` registry of the browser app (web/src/protocol.ts), as written."""
    source = (Path(__file__).resolve().parents[2] / "web" / "src" / "protocol.ts").read_text()
    block = re.search(r"export const CLOSE = \{(.*?)\} as const;", source, re.S)
    assert block is not None, "web/src/protocol.ts has no `export const CLOSE = {...} as const`"
    pairs = re.findall(r"^\s*([A-Z_]+):\s*(\d+),?\s*$", block.group(1), re.M)
    assert len(pairs) == len([line for line in block.group(1).splitlines() if line.strip()])
    return {name: int(number) for name, number in pairs}


def test_browser_close_codes_match_the_registry() -> None:
    """One registry, two languages: the same names with the same numbers."""
    assert _browser_close_codes() == {code.name: code.value for code in CloseCode}
