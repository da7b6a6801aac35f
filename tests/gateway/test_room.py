"""services/gateway/room.py: the pure room core, driven by real pycrdt documents.

Every client here is a pycrdt ``Doc`` whose updates are collected from ``doc.observe``,
so the frames fed to ``RoomCore`` are byte for byte what a Yjs client would send.
"""

from __future__ import annotations

import resource
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Awareness, Doc, Text

from services.gateway.awareness import MAX_AWARENESS_CLIENTS_PER_MEMBER, MAX_AWARENESS_STATE_BYTES
from services.gateway.room import Effects, Limits, Member, RoomCore
from services.gateway.ydoc import (
    EMPTY_UPDATE,
    TEMPLATE_CLIENT_ID,
    log_text,
    normalize_code,
    replay,
    template_update,
)
from shared import protocol
from shared.protocol import CloseCode, Message, MessageType, Role, SyncType
from shared.ywire import encode_awareness_update, encode_var_uint, parse_awareness_update

RoomFactory = Callable[..., RoomCore]
READ_ONLY: tuple[Role, ...] = ("mentor", "watcher")
WRITE_FRAMES = {SyncType.UPDATE: protocol.sync_update, SyncType.STEP2: protocol.sync_step2}


class YClient:
    """A Yjs client: a pycrdt document whose own edits come out as updates."""

    def __init__(self, client_id: int | None = None) -> None:
        self.doc: Doc[Text] = Doc() if client_id is None else Doc(client_id=client_id)
        self.text = self.doc.get("code", type=Text)
        self._updates: list[bytes] = []
        self._subscription = self.doc.observe(lambda event: self._updates.append(event.update))

    def edit(self, change: Callable[[Text], Any]) -> bytes:
        self._updates.clear()
        with self.doc.transaction():
            change(self.text)
        assert len(self._updates) == 1
        return self._updates[0]

    def insert(self, index: int, chunk: str) -> bytes:
        return self.edit(lambda text: text.insert(index, chunk))

    def delete(self, start: int, end: int) -> bytes:
        def change(text: Text) -> None:
            del text[start:end]

        return self.edit(change)

    def receive(self, frame: bytes) -> None:
        """Apply a server frame the way y-websocket does (step 2 and updates)."""
        message = protocol.decode_message(frame)
        assert message.type == MessageType.SYNC
        assert message.sync_type in (SyncType.STEP2, SyncType.UPDATE)
        self.doc.apply_update(message.payload)


@pytest.fixture
def room_factory() -> RoomFactory:
    def make(solution: str | None = None, **limits: Any) -> RoomCore:
        return RoomCore("block-1", "session-1", "epoch-1", solution, Limits(**limits))

    return make


@pytest.fixture
def room(room_factory: RoomFactory) -> RoomCore:
    return room_factory()


def _join(room: RoomCore, member_id: str, role: Role, now: float = 0.0) -> list[bytes]:
    return room.add_member(member_id, f"client-of-{member_id}", role, now)


def _awareness_frame(entries: list[tuple[int, int, str]]) -> bytes:
    return protocol.awareness_message(encode_awareness_update(entries))


def _real_awareness(client_id: int, state: dict[str, Any]) -> bytes:
    doc: Doc[Text] = Doc(client_id=client_id)
    awareness = Awareness(doc)
    awareness.set_local_state(state)
    return awareness.encode_awareness_update([client_id])


def _decode_awareness(frame: bytes) -> list[tuple[int, int, str]]:
    message = protocol.decode_message(frame)
    assert message.type == MessageType.AWARENESS
    return parse_awareness_update(message.payload)


def _nothing_changed(room: RoomCore, state: bytes, text: str) -> None:
    assert room.doc.get_state() == state
    assert str(room.text) == text


# --- pure helpers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "normalized"),
    [
        ("", ""),
        ("x", "x"),
        ("a\r\nb", "a\nb"),
        ("a\rb", "a\nb"),
        ("a\r\n\r\nb", "a\n\nb"),
        ("a  \nb\t\n", "a\nb"),
        ("a\n\n\n", "a"),
        ("a\n \n\t\n", "a"),
        ("a\r\n\r\n", "a"),
        ("\n\na", "\n\na"),  # leading blank lines count
        ("  a", "  a"),  # indentation counts
        ("\ta", "\ta"),
        ("a\n\nb", "a\n\nb"),  # inner blank lines count
        ("a \n  \nb", "a\n\nb"),
        ("def f():\n    return 1   \n\n", "def f():\n    return 1"),
        ("Zoë 🎉  \r\n", "Zoë 🎉"),
    ],
)
def test_normalize_code(code: str, normalized: str) -> None:
    assert normalize_code(code) == normalized


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("x = 1\r\ny = 2\r\n", "x = 1\ny = 2", True),
        ("x = 1   \ny = 2\n\n\n", "x = 1\ny = 2", True),
        ("x = 1\n  y = 2", "x = 1\ny = 2", False),
        ("x = 1\n\ny = 2", "x = 1\ny = 2", False),
        ("x=1", "x = 1", False),
    ],
)
def test_normalize_code_equivalences(a: str, b: str, same: bool) -> None:
    assert (normalize_code(a) == normalize_code(b)) is same


@pytest.mark.parametrize("template", ["", "print('hi')\n", "Zoë 🎉\n" * 50])
def test_template_update_is_deterministic(template: str) -> None:
    first, second = template_update(template), template_update(template)
    assert first == second
    doc: Doc[Text] = Doc()
    doc.apply_update(first)
    doc.apply_update(second)  # a second gateway builds the same bytes: a no-op
    assert str(doc.get("code", type=Text)) == template


def test_template_update_uses_the_fixed_client_id() -> None:
    doc: Doc[Text] = Doc()
    doc.apply_update(template_update("abc"))
    # state vector: one client, TEMPLATE_CLIENT_ID, clock 3
    assert doc.get_state() == b"\x01" + bytes([TEMPLATE_CLIENT_ID]) + b"\x03"
    assert template_update("") == EMPTY_UPDATE


def test_replay_applies_the_snapshot_then_the_entries() -> None:
    """One replay for the room core, the resync and the archive: the log's text."""
    client = YClient(client_id=5)
    client.doc.apply_update(template_update("ab"))
    entries = [(1, client.insert(2, "c")), (2, client.insert(0, ">")), (3, client.delete(1, 2))]
    assert log_text(template_update("ab"), entries) == ">bc"
    assert log_text(None, [(0, template_update("ab")), *entries]) == ">bc"
    assert log_text(b"", []) == ""
    doc: Doc[Text] = Doc()
    replay(doc, template_update("ab"), entries[:2])
    replay(doc, None, entries)  # entries again: a no-op for what is already there
    assert str(doc.get("code", type=Text)) == ">bc"


@pytest.mark.parametrize(
    ("role", "can_write"), [("mentor", False), ("student", True), ("watcher", False)]
)
def test_member_can_write(role: Role, can_write: bool) -> None:
    assert Member("m", "c", role, 1.0, 0.0).can_write is can_write


# --- membership -----------------------------------------------------------------------------------


def test_add_member_returns_sync_step1(room: RoomCore) -> None:
    room.load(template_update("hello"), [], 0)
    frames = _join(room, "m1", "mentor")
    assert len(frames) == 1
    message = protocol.decode_message(frames[0])
    assert message == Message(MessageType.SYNC, SyncType.STEP1, room.doc.get_state())
    member = room.members["m1"]
    assert (member.id, member.client_id, member.role) == ("m1", "client-of-m1", "mentor")


def test_add_member_includes_the_awareness_snapshot(room: RoomCore) -> None:
    _join(room, "s1", "student")
    frame = protocol.awareness_message(_real_awareness(11, {"user": {"name": "Zoë 🎉"}}))
    assert room.receive("s1", frame, 0.0).close is None
    room.apply_remote_awareness(encode_awareness_update([(99, 4, '{"user":"remote"}')]))
    frames = _join(room, "w1", "watcher")
    assert len(frames) == 2
    assert protocol.decode_message(frames[0]).sync_type == SyncType.STEP1
    states = {client: (clock, state) for client, clock, state in _decode_awareness(frames[1])}
    assert set(states) == {11, 99}
    assert states[99] == (4, '{"user":"remote"}')


def test_awareness_snapshot_skips_departed_clients(room: RoomCore) -> None:
    assert room.awareness.snapshot() is None
    room.apply_remote_awareness(encode_awareness_update([(7, 1, "{}")]))
    room.apply_remote_awareness(encode_awareness_update([(7, 2, "null")]))
    assert room.awareness.snapshot() is None
    assert _join(room, "m1", "mentor")[1:] == []


def test_full_handshake_brings_a_late_joiner_up_to_date(room: RoomCore) -> None:
    room.load(template_update("def main():\n"), [], 1)
    writer = YClient()
    _join(room, "s1", "student")
    writer.receive(room.receive("s1", protocol.sync_step1(writer.doc.get_state()), 0).reply[0])
    effects = room.receive("s1", protocol.sync_update(writer.insert(12, "    pass\n")), 0)
    assert effects.publish_update is not None

    late = YClient()
    (step1,) = _join(room, "w1", "watcher")
    # The client answers the server's step 1 with what the server lacks: nothing.
    server_sv = protocol.decode_message(step1).payload
    assert room.receive("w1", protocol.sync_step2(late.doc.get_update(server_sv)), 0) == Effects()
    # ... and sends its own step 1, answered with the whole document.
    reply = room.receive("w1", protocol.sync_step1(late.doc.get_state()), 0).reply
    late.receive(reply[0])
    assert str(late.text) == str(room.text) == "def main():\n    pass\n"


def test_remove_unknown_or_silent_member_has_no_effects(room: RoomCore) -> None:
    assert room.remove_member("nobody") == Effects()
    _join(room, "s1", "student")
    assert room.remove_member("s1") == Effects()
    assert "s1" not in room.members


# --- sync: writes ---------------------------------------------------------------------------------


def test_student_update_is_applied_broadcast_verbatim_and_published(room: RoomCore) -> None:
    room.load(template_update("ab"), [], 0)
    _join(room, "s1", "student")
    client = YClient()
    client.doc.apply_update(template_update("ab"))
    update = client.insert(1, "Zoë 🎉")
    frame = protocol.sync_update(update)
    effects = room.receive("s1", frame, 0.0)
    assert effects.broadcast == [frame]
    assert effects.broadcast[0] is frame  # the original bytes, not a re-encoding
    assert effects.publish_update == update
    assert (effects.reply, effects.close, effects.publish_awareness) == ([], None, None)
    assert str(room.text) == "aZoë 🎉b"
    assert room.doc_bytes == len(update)


def test_student_step2_is_applied_broadcast_as_an_update_and_published(room: RoomCore) -> None:
    _join(room, "s1", "student")
    client = YClient()
    client.insert(0, "offline work")
    update = client.doc.get_update(room.doc.get_state())
    effects = room.receive("s1", protocol.sync_step2(update), 0.0)
    assert effects.broadcast == [protocol.sync_update(update)]
    assert effects.publish_update == update
    assert effects.reply == [] and effects.close is None
    assert str(room.text) == "offline work"


@pytest.mark.parametrize("sync_type", list(WRITE_FRAMES), ids=lambda t: t.name)
@pytest.mark.parametrize("role", READ_ONLY)
def test_read_only_write_is_refused(room: RoomCore, role: Role, sync_type: SyncType) -> None:
    room.load(template_update("fixed"), [], 0)
    state = room.doc.get_state()
    _join(room, "r1", role)
    client = YClient()
    client.doc.apply_update(room.doc.get_update())
    update = client.insert(0, "sneaky ")
    effects = room.receive("r1", WRITE_FRAMES[sync_type](update), 0.0)
    assert effects.reply == [protocol.permission_denied(f"{role}s are read-only")]
    denied = protocol.decode_message(effects.reply[0])
    assert denied.type == MessageType.AUTH and denied.payload[0] == 0  # permission denied
    assert effects.broadcast == []
    assert effects.publish_update is None
    assert effects.close is None
    _nothing_changed(room, state, "fixed")
    assert room.doc_bytes == 0


@pytest.mark.parametrize("sync_type", list(WRITE_FRAMES), ids=lambda t: t.name)
@pytest.mark.parametrize("role", ["mentor", "student", "watcher"])
def test_empty_update_yields_nothing(room: RoomCore, role: Role, sync_type: SyncType) -> None:
    _join(room, "x", role)
    assert room.receive("x", WRITE_FRAMES[sync_type](EMPTY_UPDATE), 0.0) == Effects()
    # An update that holds only an empty delete set entry is empty too.
    only_ds = b"\x00\x01\x05\x00"
    assert room.receive("x", WRITE_FRAMES[sync_type](only_ds), 0.0) == Effects()


@pytest.mark.parametrize("role", READ_ONLY)
def test_read_only_redundant_step2_is_not_refused(room: RoomCore, role: Role) -> None:
    student = YClient()
    _join(room, "s1", "student")
    room.receive("s1", protocol.sync_update(student.insert(0, "hello world")), 0)
    room.receive("s1", protocol.sync_update(student.delete(0, 6)), 0)
    # A watcher that was in sync reconnects: same document, new socket.
    reader = YClient()
    reader.doc.apply_update(room.doc.get_update())
    (step1,) = _join(room, "r1", role)
    answer = reader.doc.get_update(protocol.decode_message(step1).payload)
    assert room.receive("r1", protocol.sync_step2(answer), 0.0) == Effects()


def test_concurrent_students_keep_both_keystrokes(room: RoomCore) -> None:
    room.load(template_update("ac"), [], 0)
    alice, bob = YClient(), YClient()
    for member_id, client in (("s1", alice), ("s2", bob)):
        _join(room, member_id, "student")
        client.receive(room.receive(member_id, protocol.sync_step1(b"\x00"), 0).reply[0])
    from_alice = room.receive("s1", protocol.sync_update(alice.insert(1, "b")), 0)
    from_bob = room.receive("s2", protocol.sync_update(bob.insert(2, "d")), 0)
    bob.receive(from_alice.broadcast[0])
    alice.receive(from_bob.broadcast[0])
    assert str(room.text) == str(alice.text) == str(bob.text) == "abcd"


# --- sync: step 1 ---------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["mentor", "student", "watcher"])
def test_step1_gets_exactly_the_missing_diff(room: RoomCore, role: Role) -> None:
    writer = YClient()
    _join(room, "s1", "student")
    room.receive("s1", protocol.sync_update(writer.insert(0, "first ")), 0)
    reader = YClient()
    reader.doc.apply_update(room.doc.get_update())
    known = reader.doc.get_state()
    room.receive("s1", protocol.sync_update(writer.insert(6, "second")), 0)

    _join(room, "r1", role)
    effects = room.receive("r1", protocol.sync_step1(known), 0)
    assert effects.broadcast == [] and effects.publish_update is None and effects.close is None
    (reply,) = effects.reply
    message = protocol.decode_message(reply)
    assert message.sync_type == SyncType.STEP2
    assert message.payload == room.doc.get_update(known)
    assert len(message.payload) < len(room.doc.get_update())
    reader.doc.apply_update(message.payload)
    assert str(reader.text) == "first second"


def test_step1_from_an_empty_client_gets_the_whole_document(room: RoomCore) -> None:
    room.load(template_update("all of it"), [], 0)
    _join(room, "w1", "watcher")
    client = YClient()
    client.receive(room.receive("w1", protocol.sync_step1(client.doc.get_state()), 0).reply[0])
    assert str(client.text) == "all of it"


def test_step1_when_nothing_is_missing_gets_an_empty_step2(room: RoomCore) -> None:
    room.load(template_update("same"), [], 0)
    _join(room, "w1", "watcher")
    reply = room.receive("w1", protocol.sync_step1(room.doc.get_state()), 0).reply
    assert reply == [protocol.sync_step2(EMPTY_UPDATE)]


# --- malformed input ------------------------------------------------------------------------------

_BOMB_UPDATE = encode_var_uint(1 << 28) + b"\x00\x00"  # claims 2^28 struct groups
_BOMB_STATE_VECTOR = encode_var_uint(1 << 28) + b"\x01\x01\x01"  # claims 2^28 entries


def _valid_update() -> bytes:
    client = YClient(client_id=5)
    return client.insert(0, "abc")


def test_bombs_are_as_small_as_the_design_says() -> None:
    assert len(_BOMB_UPDATE) == 7
    assert len(_BOMB_STATE_VECTOR) == 8


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(protocol.sync_update(_BOMB_UPDATE), id="update-bomb"),
        pytest.param(protocol.sync_step2(_BOMB_UPDATE), id="step2-bomb"),
        pytest.param(protocol.sync_step1(_BOMB_STATE_VECTOR), id="state-vector-bomb"),
        pytest.param(protocol.sync_update(b""), id="update-empty-payload"),
        pytest.param(protocol.sync_update(b"\x00"), id="update-truncated"),
        pytest.param(protocol.sync_update(_valid_update()[:-1]), id="update-cut-short"),
        pytest.param(protocol.sync_update(_valid_update() + b"\x00"), id="update-trailing-byte"),
        pytest.param(protocol.sync_update(b"\xff" * 12), id="update-garbage"),
        pytest.param(protocol.sync_step2(b"\x01\x01"), id="step2-truncated"),
        pytest.param(protocol.sync_step1(b""), id="state-vector-empty"),
        pytest.param(protocol.sync_step1(b"\x01\x05"), id="state-vector-truncated"),
        pytest.param(protocol.sync_step1(b"\x00\x00"), id="state-vector-trailing"),
        pytest.param(protocol.sync_step1(b"\x01\x05\x80\x80\x80\x80\x10"), id="clock-above-u32"),
        pytest.param(b"\x00\x02\x09\x00\x00", id="frame-length-mismatch"),
        pytest.param(b"\x00\x03\x02\x00\x00", id="sync-subtype-3"),
        pytest.param(b"", id="empty-frame"),
        pytest.param(b"\x80", id="truncated-type"),
        pytest.param(b"\x07", id="type-7"),
        pytest.param(protocol.SOLVED, id="control-from-client"),
        pytest.param(b"\x01\x05\x00", id="awareness-length-mismatch"),
        pytest.param(protocol.awareness_message(b"\x05\x01"), id="awareness-count-exceeds-data"),
        pytest.param(protocol.awareness_message(b"\x01\x01\x01\x05ab"), id="awareness-truncated"),
        pytest.param(
            protocol.awareness_message(b"\x01\x01\x01\x02\xff\xfe"), id="awareness-not-utf8"
        ),
    ],
)
@pytest.mark.parametrize("role", ["mentor", "student", "watcher"])
def test_malformed_input_closes_with_bad_request(
    room: RoomCore, role: Role, frame: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    room.load(template_update("safe"), [], 0)
    state = room.doc.get_state()
    _join(room, "x", role)

    def never(*args: object) -> None:
        raise AssertionError("pycrdt must not see a malformed message")

    monkeypatch.setattr(room.doc, "apply_update", never)
    monkeypatch.setattr(room.doc, "get_update", never)
    effects = room.receive("x", frame, 0.0)
    assert effects.close == CloseCode.BAD_REQUEST
    assert 0 < len(effects.reason) <= 100
    assert (effects.reply, effects.broadcast) == ([], [])
    assert effects.publish_update is None and effects.publish_awareness is None
    monkeypatch.undo()
    _nothing_changed(room, state, "safe")


def test_bombs_do_not_allocate(room: RoomCore) -> None:
    # pycrdt would reserve about half a gigabyte for either bomb; the validator refuses
    # them first. ru_maxrss is a high-water mark, so this can only miss, never flake.
    _join(room, "s1", "student")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for frame in (protocol.sync_update(_BOMB_UPDATE), protocol.sync_step1(_BOMB_STATE_VECTOR)):
        assert room.receive("s1", frame, 0.0).close == CloseCode.BAD_REQUEST
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 64 * 1024


def test_update_above_the_frame_limit_is_bad_request(room_factory: RoomFactory) -> None:
    room = room_factory(max_frame_bytes=64)
    _join(room, "s1", "student")
    client = YClient()
    small, big = client.insert(0, "x"), client.insert(1, "y" * 100)
    assert room.receive("s1", protocol.sync_update(small), 0).close is None
    effects = room.receive("s1", protocol.sync_update(big), 0)
    assert effects.close == CloseCode.BAD_REQUEST
    assert str(room.text) == "x"


def test_update_pycrdt_refuses_is_bad_request(
    room: RoomCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _join(room, "s1", "student")

    def refuse(update: bytes) -> None:
        raise ValueError("yrs says no")

    monkeypatch.setattr(room.doc, "apply_update", refuse)
    effects = room.receive("s1", protocol.sync_update(_valid_update()), 0)
    assert effects == Effects(close=CloseCode.BAD_REQUEST, reason="invalid update")
    assert room.doc_bytes == 0


def test_state_vector_pycrdt_refuses_is_bad_request(
    room: RoomCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    _join(room, "w1", "watcher")

    def refuse(state_vector: bytes | None = None) -> bytes:
        raise ValueError("yrs says no")

    monkeypatch.setattr(room.doc, "get_update", refuse)
    effects = room.receive("w1", protocol.sync_step1(b"\x01\x05\x03"), 0)
    assert effects == Effects(close=CloseCode.BAD_REQUEST, reason="bad state vector")


# --- limits ---------------------------------------------------------------------------------------


def test_doc_size_limit(room_factory: RoomFactory) -> None:
    room = room_factory(max_doc_bytes=10_000)
    _join(room, "s1", "student")
    client = YClient()
    first, second = client.insert(0, "a"), client.insert(1, "b")
    room.doc_bytes = 10_000 - len(first)  # exactly at the limit: accepted
    assert room.receive("s1", protocol.sync_update(first), 0).publish_update == first
    assert room.doc_bytes == 10_000
    state = room.doc.get_state()
    effects = room.receive("s1", protocol.sync_update(second), 0)
    assert effects == Effects(close=CloseCode.DOC_TOO_LARGE, reason="document too large")
    _nothing_changed(room, state, "a")
    assert room.doc_bytes == 10_000


def test_doc_size_limit_applies_to_step2(room_factory: RoomFactory) -> None:
    room = room_factory(max_doc_bytes=16)
    _join(room, "s1", "student")
    update = YClient().insert(0, "z" * 40)
    effects = room.receive("s1", protocol.sync_step2(update), 0)
    assert effects.close == CloseCode.DOC_TOO_LARGE
    assert str(room.text) == ""


def test_rate_limit_burst_then_refill(room_factory: RoomFactory) -> None:
    room = room_factory(updates_per_second=8.0, burst=3)  # 1/8 s is exact in binary
    _join(room, "s1", "student", now=100.0)
    client = YClient()

    def send(chunk: str, now: float) -> Effects:
        return room.receive("s1", protocol.sync_update(client.insert(0, chunk)), now)

    assert [send(c, 100.0).close for c in "abc"] == [None, None, None]  # the burst
    limited = send("d", 100.0)
    assert limited == Effects(close=CloseCode.RATE_LIMITED, reason="too many messages")
    assert str(room.text) == "cba"  # the refused update was not applied
    assert send("e", 100.0625).close == CloseCode.RATE_LIMITED  # half a token back
    assert send("f", 100.125).close is None  # one token back
    assert send("g", 100.125).close == CloseCode.RATE_LIMITED
    # A long pause refills to the burst, no further.
    assert [send(c, 1000.0).close for c in "hijk"] == [None, None, None, CloseCode.RATE_LIMITED]


def test_rate_limit_counts_every_frame_and_every_member_alone(room_factory: RoomFactory) -> None:
    room = room_factory(updates_per_second=1.0, burst=2)
    _join(room, "w1", "watcher", now=0.0)
    _join(room, "w2", "watcher", now=0.0)
    assert room.receive("w1", b"\x03", 0.0).close is None
    assert room.receive("w1", b"\x02\x00\x00", 0.0).close is None
    assert room.receive("w1", b"\x03", 0.0).close == CloseCode.RATE_LIMITED
    assert room.receive("w2", b"\x03", 0.0).close is None  # its own bucket


def test_default_limits() -> None:
    limits = Limits()
    assert limits.max_doc_bytes == 1 << 20
    assert limits.max_frame_bytes == 1 << 18
    assert limits.burst >= limits.updates_per_second > 0


# --- awareness ------------------------------------------------------------------------------------


def test_awareness_is_relayed_published_and_remembered(room: RoomCore) -> None:
    _join(room, "s1", "student")
    update = _real_awareness(41, {"user": {"name": "Zoë 🎉", "color": "#ff0"}})
    frame = protocol.awareness_message(update)
    effects = room.receive("s1", frame, 0.0)
    assert effects.broadcast == [frame]
    assert effects.broadcast[0] is frame
    assert effects.publish_awareness == update
    assert (effects.reply, effects.publish_update, effects.close) == ([], None, None)
    ((client, clock, state),) = parse_awareness_update(update)
    assert room.awareness.states == {41: (clock, state)}
    assert room.members["s1"].awareness_ids == {41}


@pytest.mark.parametrize("role", ["mentor", "student", "watcher"])
def test_every_role_may_share_awareness(room: RoomCore, role: Role) -> None:
    _join(room, "x", role)
    assert room.receive("x", _awareness_frame([(8, 1, '{"cursor":3}')]), 0).close is None


def test_late_joiner_and_query_get_the_snapshot(room: RoomCore) -> None:
    _join(room, "s1", "student")
    _join(room, "w1", "watcher")
    assert room.receive("w1", b"\x03", 0.0) == Effects()  # nothing to report yet
    room.receive("s1", _awareness_frame([(1, 1, '{"a":1}'), (2, 5, '{"b":2}')]), 0)
    late = _join(room, "w2", "watcher")
    assert sorted(_decode_awareness(late[1])) == [(1, 1, '{"a":1}'), (2, 5, '{"b":2}')]
    (reply,) = room.receive("w1", b"\x03", 0.0).reply
    assert sorted(_decode_awareness(reply)) == [(1, 1, '{"a":1}'), (2, 5, '{"b":2}')]


def test_awareness_clock_order(room: RoomCore) -> None:
    _join(room, "s1", "student")
    room.receive("s1", _awareness_frame([(3, 5, '{"v":5}')]), 0)
    room.receive("s1", _awareness_frame([(3, 4, '{"v":4}')]), 0)  # older: ignored
    assert room.awareness.states[3] == (5, '{"v":5}')
    room.receive("s1", _awareness_frame([(3, 6, '{"v":6}')]), 0)
    assert room.awareness.states[3] == (6, '{"v":6}')
    room.receive("s1", _awareness_frame([(3, 7, "null")]), 0)  # the client said goodbye
    assert 3 not in room.awareness.states
    assert room.awareness.snapshot() is None


def test_remove_member_retracts_its_awareness(room: RoomCore) -> None:
    _join(room, "s1", "student")
    _join(room, "s2", "student")
    room.receive("s1", _awareness_frame([(10, 7, '{"a":1}'), (11, 2, '{"b":1}')]), 0)
    room.receive("s2", _awareness_frame([(20, 1, '{"c":1}')]), 0)
    effects = room.remove_member("s1")
    assert effects.publish_awareness is not None
    assert effects.broadcast == [protocol.awareness_message(effects.publish_awareness)]
    gone = sorted(parse_awareness_update(effects.publish_awareness))
    assert gone == [(10, 8, "null"), (11, 3, "null")]  # clock + 1, state null
    assert set(room.awareness.states) == {20}
    assert (effects.reply, effects.publish_update, effects.close) == ([], None, None)
    assert effects.awareness_owner == "sclient-of-s1"
    # The id stays its owner's: someone else may not take it, the same client may.
    assert room.receive("s2", _awareness_frame([(10, 9, "{}")]), 0).close == 4400
    room.add_member("s1-again", "client-of-s1", "student", 0.0)
    assert room.receive("s1-again", _awareness_frame([(10, 9, "{}")]), 0).close is None


def test_remove_member_after_it_said_null(room: RoomCore) -> None:
    _join(room, "s1", "student")
    room.receive("s1", _awareness_frame([(10, 3, "{}")]), 0)
    room.receive("s1", _awareness_frame([(10, 4, "null")]), 0)
    effects = room.remove_member("s1")
    assert effects.publish_awareness is not None
    assert parse_awareness_update(effects.publish_awareness) == [
        (10, 5, "null")
    ]  # one past the last clock seen


def test_awareness_id_moves_to_the_newest_sender(room: RoomCore) -> None:
    # y-websocket keeps its awareness id across reconnects; the old socket may linger.
    room.add_member("s1", "client-a", "student", 0.0)
    room.add_member("s2", "client-a", "student", 0.0)
    room.receive("s1", _awareness_frame([(10, 1, '{"mine":true}')]), 0)
    effects = room.receive("s2", _awareness_frame([(10, 2, '{"mine":2}')]), 0)
    assert effects.close is None
    assert room.awareness.states[10] == (2, '{"mine":2}')
    assert room.members["s2"].awareness_ids == {10}
    assert room.members["s1"].awareness_ids == set()


def test_same_client_reconnecting_may_reclaim_its_awareness_id(room: RoomCore) -> None:
    room.add_member("old", "client-a", "student", 0.0)
    room.receive("old", _awareness_frame([(10, 5, '{"me":1}')]), 0)
    room.add_member("new", "client-a", "student", 1.0)
    effects = room.receive("new", _awareness_frame([(10, 6, '{"me":1}')]), 1.0)
    assert effects.close is None


def test_awareness_state_size_limit(room: RoomCore) -> None:
    _join(room, "s1", "student")
    at_limit = '"' + "x" * (MAX_AWARENESS_STATE_BYTES - 2) + '"'
    assert room.receive("s1", _awareness_frame([(1, 1, at_limit)]), 0).close is None
    over = '"' + "x" * (MAX_AWARENESS_STATE_BYTES - 1) + '"'
    effects = room.receive("s1", _awareness_frame([(1, 2, over)]), 0)
    assert effects == Effects(close=CloseCode.BAD_REQUEST, reason="awareness state too large")
    assert room.awareness.states[1][0] == 1


def test_awareness_state_limit_counts_bytes(room: RoomCore) -> None:
    _join(room, "s1", "student")
    state = '"' + "🎉" * 1000 + '"'  # 1002 characters, 4002 bytes
    assert len(state.encode()) <= MAX_AWARENESS_STATE_BYTES
    assert room.receive("s1", _awareness_frame([(1, 1, state)]), 0).close is None
    big = '"' + "🎉" * 2000 + '"'  # 2002 characters, 8002 bytes
    assert room.receive("s1", _awareness_frame([(1, 2, big)]), 0).close == CloseCode.BAD_REQUEST


@pytest.mark.parametrize(
    "state",
    ["{not json", "", "undefined", "{'a': 1}", '{"a":1', "NaN"],
)
def test_awareness_state_must_be_json(room: RoomCore, state: str) -> None:
    _join(room, "s1", "student")
    effects = room.receive("s1", _awareness_frame([(1, 1, state)]), 0)
    assert effects == Effects(close=CloseCode.BAD_REQUEST, reason="awareness is not JSON")
    assert room.awareness.states == {}


@pytest.mark.parametrize("state", ["null", "{}", "[]", "1", '"x"', '{"user":{"name":"Zoë 🎉"}}'])
def test_awareness_state_json_values(room: RoomCore, state: str) -> None:
    _join(room, "s1", "student")
    assert room.receive("s1", _awareness_frame([(1, 1, state)]), 0).close is None


def test_too_many_awareness_ids_per_member(room: RoomCore) -> None:
    _join(room, "s1", "student")
    limit = MAX_AWARENESS_CLIENTS_PER_MEMBER
    for client in range(1, limit + 1):
        assert room.receive("s1", _awareness_frame([(client, 1, "{}")]), 0).close is None
    # Updating one it already has is fine, and so is repeating an id in one message.
    assert room.receive("s1", _awareness_frame([(1, 2, "{}"), (1, 3, "{}")]), 0).close is None
    effects = room.receive("s1", _awareness_frame([(limit + 1, 1, "{}")]), 0)
    assert effects == Effects(close=CloseCode.BAD_REQUEST, reason="too many awareness ids")
    assert limit + 1 not in room.awareness.states


def test_too_many_awareness_ids_in_one_message(room: RoomCore) -> None:
    _join(room, "s1", "student")
    entries = [(c, 1, "{}") for c in range(MAX_AWARENESS_CLIENTS_PER_MEMBER + 1)]
    effects = room.receive("s1", _awareness_frame(entries), 0)
    assert effects.close == CloseCode.BAD_REQUEST
    assert room.awareness.states == {}  # nothing remembered from a refused message


def test_auth_from_a_client_is_ignored(room: RoomCore) -> None:
    _join(room, "s1", "student")
    assert room.receive("s1", protocol.permission_denied("nope"), 0) == Effects()
    assert room.receive("s1", b"\x02", 0) == Effects()


# --- from Redis -----------------------------------------------------------------------------------


def _log(*chunks: str) -> list[bytes]:
    client = YClient()
    client.doc.apply_update(template_update("T"))
    updates = []
    for chunk in chunks:
        updates.append(client.insert(len(str(client.text)), chunk))
    return updates


def test_load_snapshot_and_entries(room: RoomCore) -> None:
    entries = list(enumerate(_log("1", "2", "3"), start=1))
    room.load(template_update("T"), entries, 3)
    assert str(room.text) == "T123"
    assert room.applied_seq == 3


def test_load_without_snapshot_and_never_backwards(room: RoomCore) -> None:
    room.load(None, [], 5)
    assert room.applied_seq == 5
    room.load(b"", [(1, template_update("T"))], 2)
    assert str(room.text) == "T"
    assert room.applied_seq == 5


def test_apply_remote_update_in_order(room: RoomCore) -> None:
    room.load(template_update("T"), [], 0)
    first, second = _log("a", "b")
    frame, gap = room.apply_remote_update(1, first, own=False)
    assert (frame, gap) == (protocol.sync_update(first), False)
    assert room.apply_remote_update(2, second, own=False) == (protocol.sync_update(second), False)
    assert room.applied_seq == 2
    assert str(room.text) == "Tab"


def test_apply_remote_update_ignores_what_it_has(
    room: RoomCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    room.load(template_update("T"), [], 0)
    (first,) = _log("a")
    room.apply_remote_update(1, first, own=False)

    def never(update: bytes) -> None:
        raise AssertionError("a duplicate must not be applied")

    monkeypatch.setattr(room.doc, "apply_update", never)
    assert room.apply_remote_update(1, first, own=False) == (None, False)
    assert room.apply_remote_update(0, first, own=False) == (None, False)
    assert room.applied_seq == 1


def test_apply_remote_update_detects_a_gap(room: RoomCore) -> None:
    room.load(template_update("T"), [], 0)
    first, second, third = _log("a", "b", "c")
    room.apply_remote_update(1, first, own=False)
    frame, gap = room.apply_remote_update(3, third, own=False)
    assert gap is True
    assert frame == protocol.sync_update(third)
    assert room.applied_seq == 1  # the shell reads the log from here
    # The shell then fills the gap from the log, in order.
    assert room.apply_remote_update(2, second, own=False)[1] is False
    assert room.apply_remote_update(3, third, own=False)[1] is False
    assert room.applied_seq == 3
    assert str(room.text) == "Tabc"


def test_apply_remote_update_own(room: RoomCore, monkeypatch: pytest.MonkeyPatch) -> None:
    room.load(template_update("T"), [], 0)
    first, second, third = _log("a", "b", "c")

    def never(update: bytes) -> None:
        raise AssertionError("our own update was applied when our client sent it")

    monkeypatch.setattr(room.doc, "apply_update", never)
    assert room.apply_remote_update(1, first, own=True) == (None, False)
    assert room.applied_seq == 1
    assert room.apply_remote_update(3, third, own=True) == (None, True)
    assert room.applied_seq == 1


def test_apply_remote_awareness(room: RoomCore) -> None:
    update = _real_awareness(77, {"user": {"name": "far away"}})
    assert room.apply_remote_awareness(update) == protocol.awareness_message(update)
    assert 77 in room.awareness.states
    gone = encode_awareness_update([(77, room.awareness.states[77][0] + 1, "null")])
    assert room.apply_remote_awareness(gone) == protocol.awareness_message(gone)
    assert room.awareness.states == {}


@pytest.mark.parametrize(
    "garbage",
    [b"", b"\x80", b"\x05\x01", b"\x01\x01\x01\x05ab", b"\x00\x00", b"\xff" * 20],
)
def test_apply_remote_awareness_garbage(room: RoomCore, garbage: bytes) -> None:
    assert room.apply_remote_awareness(garbage) is None
    assert room.awareness.states == {}


def test_full_update(room: RoomCore) -> None:
    room.load(template_update("T"), [], 0)
    (update,) = _log("x")
    room.apply_remote_update(1, update, own=False)
    assert room.full_update() == room.doc.get_update()
    partial = room.full_update(_state_of(template_update("T")))
    assert partial == room.doc.get_update(_state_of(template_update("T")))
    fresh: Doc[Text] = Doc()
    fresh.apply_update(template_update("T"))
    fresh.apply_update(partial)
    assert str(fresh.get("code", type=Text)) == "Tx"


def _state_of(update: bytes) -> bytes:
    doc: Doc[Text] = Doc()
    doc.apply_update(update)
    return doc.get_state()


# --- solved ---------------------------------------------------------------------------------------


def test_solved_check_without_a_solution_is_always_none(room: RoomCore) -> None:
    room.load(template_update("anything"), [], 0)
    assert room.solved_check() is None
    _join(room, "s1", "student")
    room.receive("s1", protocol.sync_update(YClient().insert(0, "x")), 0)
    assert room.solved_check() is None


def test_solved_check_life_cycle(room_factory: RoomFactory) -> None:
    room = room_factory(solution="def f():\n    return 1\n")
    room.load(template_update("def f():\n"), [], 0)
    assert room.solved_check() is None  # no match, and no match before
    assert room.solved_check() is None
    _join(room, "s1", "student")
    client = YClient()
    client.doc.apply_update(room.doc.get_update())

    def type_(index: int, chunk: str) -> None:
        room.receive("s1", protocol.sync_update(client.insert(index, chunk)), 0)

    type_(9, "    return 1   \r\n\r\n")  # CRLF, trailing spaces and blank lines: still a match
    assert room.solved_check() is True
    assert room.solved_check() is None  # reported once
    type_(0, "# hi\n")
    assert room.solved_check() is False  # stopped matching
    assert room.solved_check() is None
    room.receive("s1", protocol.sync_update(client.delete(0, 5)), 0)
    assert room.solved_check() is True


def test_solved_check_sees_remote_updates(room_factory: RoomFactory) -> None:
    room = room_factory(solution="Tx")
    room.load(template_update("T"), [], 0)
    assert room.solved_check() is None
    (update,) = _log("x")
    room.apply_remote_update(1, update, own=False)
    assert room.solved_check() is True


def test_solved_when_the_template_already_matches(room_factory: RoomFactory) -> None:
    room = room_factory(solution="done")
    room.load(template_update("done\n"), [], 0)
    assert room.solved_check() is True


@pytest.mark.parametrize(
    ("text", "solved"),
    [
        ("if x:\n    y()", True),
        ("if x:\r\n    y()\r\n", True),
        ("if x:\r    y()\r", True),
        ("if x:  \n    y()\t\n\n\n", True),
        ("if x:\n  y()", False),  # indentation counts
        ("if x:\n\n    y()", False),  # inner blank lines count
        ("\nif x:\n    y()", False),  # leading blank lines count
        ("if x:\n    y( )", False),
    ],
)
def test_solved_rule(room_factory: RoomFactory, text: str, solved: bool) -> None:
    room = room_factory(solution="if x:\n    y()\n")
    room.load(template_update(text), [], 0)
    assert room.solved_check() is (True if solved else None)


_CODE_CHARS = st.sampled_from(["x", "y", " ", "\t", "\n", "\r", "\r\n", "\xa0", "\x0b", "é", "😀"])
_CODE = st.lists(_CODE_CHARS, max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(text=_CODE, solution=_CODE)
def test_solved_check_agrees_with_the_solved_rule(text: str, solution: str) -> None:
    """The check's shortcuts (the Yjs length, length, first line, equality) never change
    its answer, whatever the characters' UTF-8 widths."""
    room = RoomCore("b", "s", "e", solution, Limits())
    room.load(template_update(text), [], 0)
    matches = normalize_code(text) == normalize_code(solution)
    assert room.solved_check() is (True if matches else None)


def test_local_awareness_lists_only_this_gateways_members(room: RoomCore) -> None:
    assert room.local_awareness() == []
    _join(room, "s1", "student")
    _join(room, "m1", "mentor")
    room.receive("s1", _awareness_frame([(10, 3, '{"me":1}')]), 0)
    room.receive("m1", _awareness_frame([(11, 1, '{"m":1}')]), 0)
    room.apply_remote_awareness(encode_awareness_update([(20, 1, '{"other":1}')]), "sx")
    mine = dict(room.local_awareness())
    assert {owner: parse_awareness_update(u) for owner, u in mine.items()} == {
        "sclient-of-s1": [(10, 3, '{"me":1}')],
        "mclient-of-m1": [(11, 1, '{"m":1}')],
    }


# --- awareness ownership (a member may not speak for another's Yjs id) ---------------------


def test_awareness_for_another_members_id_is_refused(room: RoomCore) -> None:
    _join(room, "s1", "student")
    _join(room, "s2", "student")
    room.receive("s1", _awareness_frame([(10, 1, '{"user":{"name":"Ada"}}')]), 0)
    forged = _awareness_frame([(10, 2, '{"user":{"name":"Ada (forged)"}}')])
    effects = room.receive("s2", forged, 0)
    assert effects == Effects(close=CloseCode.BAD_REQUEST, reason="awareness id of another member")
    assert room.awareness.states[10] == (1, '{"user":{"name":"Ada"}}')
    assert room.members["s1"].awareness_ids == {10} and room.members["s2"].awareness_ids == set()
    # A forged removal too; and a forged entry hidden among the sender's own.
    assert room.receive("s2", _awareness_frame([(10, 2, "null")]), 0).close == 4400
    mixed = _awareness_frame([(20, 1, "{}"), (10, 3, "{}")])
    assert room.receive("s2", mixed, 0).close == 4400
    assert 20 not in room.awareness.states and room.awareness.states[10][0] == 1


def test_a_stock_clients_timeout_removal_of_a_peer_is_dropped_silently(room: RoomCore) -> None:
    # y-protocols removes a silent peer's state at the clock it knows, and y-websocket
    # sends that on: not a forgery, and nothing to relay.
    _join(room, "s1", "student")
    _join(room, "s2", "student")
    room.receive("s1", _awareness_frame([(10, 4, "{}")]), 0)
    effects = room.receive("s2", _awareness_frame([(10, 4, "null"), (20, 1, "{}")]), 0)
    assert effects.close is None
    assert parse_awareness_update(effects.publish_awareness or b"") == [(20, 1, "{}")]
    assert room.awareness.states[10] == (4, "{}")


def test_the_mentors_ids_are_not_a_students_even_with_its_client_id(room: RoomCore) -> None:
    room.add_member("m", "tab-1", "mentor", 0.0)
    room.receive("m", _awareness_frame([(10, 1, '{"user":{"name":"Mentor"}}')]), 0)
    room.remove_member("m")
    # A student who learnt the mentor's client id joins with it: still not the owner.
    room.add_member("s", "tab-1", "student", 0.0)
    assert room.receive("s", _awareness_frame([(10, 9, "{}")]), 0).close == 4400
    room.add_member("m2", "tab-1", "mentor", 0.0)
    assert room.receive("m2", _awareness_frame([(10, 9, "{}")]), 0).close is None


def test_ownership_learnt_from_other_gateways(room: RoomCore) -> None:
    room.apply_remote_awareness(encode_awareness_update([(30, 1, '{"r":1}')]), "sremote-tab")
    room.add_member("s1", "local-tab", "student", 0.0)
    assert room.receive("s1", _awareness_frame([(30, 2, "{}")]), 0).close == 4400
    # The remote tab itself, reconnecting here after its gateway died, takes it back.
    room.add_member("s2", "remote-tab", "student", 0.0)
    effects = room.receive("s2", _awareness_frame([(30, 2, '{"r":2}')]), 0)
    assert effects.close is None and effects.awareness_owner == "sremote-tab"
    assert room.members["s2"].awareness_ids == {30}


def test_a_client_that_missed_its_own_removal_is_told_so(room: RoomCore) -> None:
    # Its socket closed (a gateway restart): the room announced the removal at clock 6.
    room.add_member("old", "tab", "student", 0.0)
    room.receive("old", _awareness_frame([(10, 5, '{"me":1}')]), 0)
    room.remove_member("old")
    assert room.awareness.clocks[10] == 6
    # Back on a new socket with its last clock: not newer, so not relayed...
    room.add_member("new", "tab", "student", 0.0)
    effects = room.receive("new", _awareness_frame([(10, 5, '{"me":1}')]), 0)
    assert effects.broadcast == [] and effects.publish_awareness is None
    # ...but answered with the removal, which makes y-protocols re-announce (clock 7).
    assert [_decode_awareness(f) for f in effects.reply] == [[(10, 6, "null")]]
    again = room.receive("new", _awareness_frame([(10, 7, '{"me":1}')]), 0)
    assert again.publish_awareness is not None and room.awareness.states[10] == (7, '{"me":1}')


def test_an_echo_of_a_live_state_gets_no_reply(room: RoomCore) -> None:
    _join(room, "a", "student")
    _join(room, "b", "student")
    room.receive("a", _awareness_frame([(10, 5, '{"me":1}')]), 0)
    assert room.receive("b", _awareness_frame([(10, 5, '{"me":1}')]), 0) == Effects()
