"""Property-based fuzzing of what a client's bytes go through first on a gateway.

`shared.protocol.decode_message` and `RoomCore.receive` get arbitrary frames: raw bytes,
frames with a correct header around random bodies, and real Yjs updates with bytes
flipped, cut or appended. Neither may raise: the decoder returns a message or raises
`ProtocolError`; the core returns effects or a named close code, and a refused frame
changes nothing. (The validator `shared/yvalidate.py` has its own fuzz tests.)
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from pycrdt import Doc, Text

from services.gateway.room import Limits, RoomCore
from services.gateway.ydoc import template_update
from shared import protocol
from shared.protocol import CloseCode, Message, MessageType, ProtocolError, SyncType
from shared.ywire import encode_awareness_update, encode_var_uint
from tests.yclient import text_update

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


REAL = text_update("hello world", 77)
REAL_SV = Doc(client_id=5).get_state()


@st.composite
def mutated(draw: st.DrawFn, base: bytes) -> bytes:
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "append", "insert"]))
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        elif op == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        elif op == "append":
            data += draw(st.binary(min_size=1, max_size=8))
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


huge_varint = st.integers(2**20, 2**53 - 1).map(encode_var_uint)
bodies = st.one_of(
    st.binary(max_size=64),
    mutated(REAL),
    huge_varint.map(lambda v: v + b"\x00" * 4),  # counts that claim far more than follows
    st.builds(lambda a, b: a + b, huge_varint, huge_varint),
)
awareness_bodies = st.one_of(
    st.binary(max_size=48),
    st.lists(
        st.tuples(
            st.integers(0, 2**53 - 1),
            st.integers(0, 2**32),
            st.one_of(st.just("null"), st.text(max_size=20), st.just('{"a":1}')),
        ),
        max_size=6,
    ).map(encode_awareness_update),
)
frames = st.one_of(
    st.binary(max_size=96),
    bodies.map(protocol.sync_update),
    bodies.map(protocol.sync_step2),
    bodies.map(protocol.sync_step1),
    awareness_bodies.map(protocol.awareness_message),
    mutated(protocol.sync_update(REAL)),
    mutated(protocol.sync_step1(REAL_SV)),
    st.builds(
        lambda t, rest: encode_var_uint(t) + rest, st.integers(0, 2**40), st.binary(max_size=16)
    ),
)


@FUZZ
@given(frames)
@example(b"")
@example(b"\x80")  # truncated varint
@example(b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")  # overlong varint
@example(b"\x00\x02\x07\x00\x01\x80\x80\x80\x80\x01\x00")  # size claim mismatch
def test_decode_message_returns_or_raises_protocol_error(frame: bytes) -> None:
    try:
        message = protocol.decode_message(frame)
    except ProtocolError as exc:
        assert str(exc)
        return
    assert isinstance(message, Message)
    assert message.type in MessageType
    assert len(message.payload) <= len(frame)
    if message.type == MessageType.SYNC:
        assert message.sync_type in SyncType


def _room() -> RoomCore:
    room = RoomCore("b" * 24, "s" * 24, "e", "SOLUTION", Limits(burst=10**9))
    room.load(template_update("seed text"), [], 1)
    for member, role in (("m", "mentor"), ("s", "student"), ("w", "watcher")):
        room.add_member(member, member, role, 0.0)  # type: ignore[arg-type]
    return room


@FUZZ
@given(st.lists(frames, min_size=1, max_size=8), st.sampled_from(["m", "s", "w"]))
def test_room_core_receive_never_raises(batch: list[bytes], member: str) -> None:
    room = _room()
    before_state, before_text = room.doc.get_state(), str(room.text)
    now = 1.0
    for frame in batch:
        now += 0.001
        effects = room.receive(member, frame, now)
        if effects.close is not None:
            assert effects.close in CloseCode
            assert not protocol.should_reconnect(effects.close)  # bad input is terminal
            assert effects.publish_update is None and not effects.broadcast
            assert len(effects.reason) <= 100
            break
        for out in effects.reply + effects.broadcast:
            protocol.decode_message(out)  # what the core emits is itself well-formed
    if member != "s":  # read-only roles never change the document, whatever they send
        assert (room.doc.get_state(), str(room.text)) == (before_state, before_text)
    assert "SOLUTION" not in str(room.text) or "SOLUTION" in before_text


@FUZZ
@given(awareness_bodies, st.sampled_from(["m", "s", "w"]))
def test_awareness_never_touches_the_document(body: bytes, member: str) -> None:
    room = _room()
    before = room.doc.get_update()
    room.receive(member, protocol.awareness_message(body), 1.0)
    assert room.doc.get_update() == before


@pytest.mark.parametrize("sub", [SyncType.UPDATE, SyncType.STEP2])
@FUZZ
@given(data=mutated(REAL))
def test_mutated_real_updates_are_applied_whole_or_refused(sub: SyncType, data: bytes) -> None:
    assume(data != REAL)
    room = _room()
    before = room.doc.get_update()
    before_state, before_text = room.doc.get_state(), str(room.text)
    make = protocol.sync_update if sub == SyncType.UPDATE else protocol.sync_step2
    effects = room.receive("s", make(data), 1.0)
    if effects.close is None and effects.publish_update is not None:
        # Accepted: the room holds what pycrdt makes of the same bytes on a copy of it.
        copy: Doc[Text] = Doc()
        copy.apply_update(before)
        copy.apply_update(data)
        assert str(room.text) == str(copy.get("code", type=Text))
        assert room.doc.get_state() == copy.get_state()
    else:
        # Refused (closed) or ignored: nothing of it reached the document.
        assert effects.publish_update is None and not effects.broadcast
        assert (room.doc.get_state(), str(room.text)) == (before_state, before_text)
