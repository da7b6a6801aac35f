"""services.gateway.channel: the room channel's codec, by table, with malformed input and
round trips (what the Lua scripts publish is checked in test_scripts.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.gateway.channel import (
    Awareness,
    AwarenessQuery,
    ChannelError,
    LogEntry,
    Message,
    Presence,
    RunShared,
    SessionClosed,
    Solved,
    Unsolved,
    awareness_prefix,
    decode,
    encode_awareness,
    encode_log_entry,
    encode_presence,
    encode_query,
    encode_run,
    encode_session_closed,
    encode_solved,
    encode_unsolved,
)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"Ugw-1\x00e1\x0012\x00\x01\x00", LogEntry(b"gw-1", "e1", 12, b"\x01\x00")),
        (b"Ug\x00e\x001\x00a\x00b\x00", LogEntry(b"g", "e", 1, b"a\x00b\x00")),  # NULs in it
        (b"Ug\x00e\x003\x00", LogEntry(b"g", "e", 3, b"")),
        (b"Agw\x00sc1\x00\x01\x02\x00", Awareness(b"gw", "sc1", b"\x01\x02\x00")),
        (b"Qgw-2", AwarenessQuery(b"gw-2")),
        (b"P7\x001\x003\x000", Presence(7, True, 3, 0)),
        (b"P1\x000\x000\x002", Presence(1, False, 0, 2)),
        (b"S41", Solved(41)),
        (b"N42", Unsolved(42)),
        (b"Cabc\x00mentor-left", SessionClosed("abc", "mentor-left")),
        (b"Cabc\x00", SessionClosed("abc", "")),
        (b'R{"type":"run"}', RunShared(b'{"type":"run"}')),
    ],
)
def test_decode_table(data: bytes, message: Message) -> None:
    assert decode(data) == message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "unknown kind"),
        (b"X1", "unknown kind"),
        (b"Ug\x00e\x001", "log entry needs"),
        (b"Ug\x00e\x00-1\x00u", "not a count"),
        (b"Ug\x00e\x00x\x00u", "not a count"),
        (b"Ug\x00\xff\x001\x00u", "UTF-8"),
        (b"Agw", "awareness message needs"),
        (b"Agw\x00owner", "awareness message needs"),
        (b"P1\x001\x002", "presence needs"),
        (b"P1\x002\x000\x000", "presence needs"),
        (b"P1\x001\x00two\x000", "not a count"),
        (b"S", "not a count"),
        (b"S1 ", "not a count"),
        (b"Cabc", "close needs"),
        (b"C\xff\x00r", "UTF-8"),
    ],
)
def test_decode_rejects_malformed_messages(data: bytes, reason: str) -> None:
    with pytest.raises(ChannelError, match=reason):
        decode(data)


def test_encoders_write_what_decode_reads() -> None:
    assert encode_log_entry(b"gw", "ep", 5, b"\x00u") == b"Ugw\x00ep\x005\x00\x00u"
    assert encode_awareness(b"gw", "mc", b"\x01") == awareness_prefix(b"gw") + b"mc\x00\x01"
    assert encode_query(b"gw") == b"Qgw"
    assert encode_presence(Presence(3, False, 2, 1)) == b"P3\x000\x002\x001"
    assert encode_solved(9) == b"S9"
    assert encode_unsolved(10) == b"N10"
    assert encode_session_closed("s", "empty") == b"Cs\x00empty"
    assert encode_run(b'{"a":1}') == b'R{"a":1}' and decode(encode_run(b"{}")) == RunShared(b"{}")


origins = st.binary(min_size=1, max_size=20).filter(lambda b: b"\x00" not in b)
texts = st.text(max_size=20).filter(lambda t: "\x00" not in t)
counts = st.integers(min_value=0, max_value=2**40)


@given(origins, texts, counts, st.binary(max_size=64))
def test_log_entry_round_trip(origin: bytes, epoch: str, seq: int, update: bytes) -> None:
    assert decode(encode_log_entry(origin, epoch, seq, update)) == LogEntry(
        origin, epoch, seq, update
    )


@given(origins, st.binary(max_size=64))
def test_awareness_round_trip(origin: bytes, update: bytes) -> None:
    assert decode(encode_awareness(origin, "sc", update)) == Awareness(origin, "sc", update)
    assert decode(encode_query(origin)) == AwarenessQuery(origin)


@given(counts, st.booleans(), counts, counts)
def test_presence_round_trip(version: int, mentor: bool, students: int, watchers: int) -> None:
    counts = Presence(version, mentor, students, watchers)
    assert decode(encode_presence(counts)) == counts


@given(counts, texts, texts)
def test_solved_and_close_round_trip(seq: int, session: str, reason: str) -> None:
    assert decode(encode_solved(seq)) == Solved(seq)
    assert decode(encode_unsolved(seq)) == Unsolved(seq)
    assert decode(encode_session_closed(session, reason)) == SessionClosed(session, reason)


@given(st.binary(max_size=40))
def test_decode_never_fails_otherwise(data: bytes) -> None:
    try:
        decode(data)
    except ChannelError:
        pass
