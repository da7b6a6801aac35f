"""services.gateway.inbound: what a room does with each channel message, without Redis or
sockets: own echoes, other epochs, gaps, presence versions, awareness queries, closes."""

from __future__ import annotations

import pytest
from pycrdt import Doc, Text

from services.gateway.channel import (
    Awareness,
    AwarenessQuery,
    LogEntry,
    Presence,
    SessionClosed,
    Solved,
    Unsolved,
    decode,
    encode_log_entry,
)
from services.gateway.inbound import Head, Reaction, Sent, head_verdict, newer_presence, react
from services.gateway.room import Limits, RoomCore
from services.gateway.wire import presence_frame
from services.gateway.ydoc import replay, template_update
from shared import protocol
from shared.ywire import encode_awareness_update

OWN, OTHER = b"gw-a", b"gw-b"


def _room() -> RoomCore:
    room = RoomCore("block-1", "session-1", "epoch-1", "done", Limits())
    room.load(template_update("T"), [], 0)
    return room


def _edits(n: int) -> list[bytes]:
    doc: Doc[Text] = Doc(client_id=77)
    replay(doc, template_update("T"), [])
    text = doc.get("code", type=Text)
    out = []
    for i in range(n):
        before = doc.get_state()
        text.insert(len(str(text)), str(i))
        out.append(doc.get_update(before))
    return out


def test_an_update_from_another_gateway_reaches_the_members() -> None:
    room = _room()
    (update,) = _edits(1)
    reaction = react(room, LogEntry(OTHER, "epoch-1", 1, update), OWN)
    assert reaction == Reaction(fanout=[protocol.sync_update(update)])
    assert room.applied_seq == 1 and str(room.text) == "T0"


def test_our_own_update_is_not_sent_again_but_checked_once_in_sequence() -> None:
    room = _room()
    first, second = _edits(2)
    room.doc.apply_update(first)  # applied when our client sent it
    assert react(room, LogEntry(OWN, "epoch-1", 1, first), OWN) == Reaction(check_solved=True)
    # The same entry again (read from the log meanwhile): nothing to do, no second check.
    assert react(room, LogEntry(OWN, "epoch-1", 1, first), OWN) == Reaction()
    room.doc.apply_update(second)
    assert react(room, LogEntry(OWN, "epoch-1", 2, second), OWN).check_solved


def test_a_gap_asks_for_a_catch_up() -> None:
    room = _room()
    first, _, third = _edits(3)
    react(room, LogEntry(OTHER, "epoch-1", 1, first), OWN)
    reaction = react(room, LogEntry(OTHER, "epoch-1", 3, third), OWN)
    assert reaction.catch_up and room.applied_seq == 1
    # Our own entry after a gap: a catch-up too, and no check before it is in sequence.
    own = react(room, LogEntry(OWN, "epoch-1", 4, third), OWN)
    assert own.catch_up and not own.check_solved and not own.fanout


def test_another_epoch_is_applied_and_asks_for_a_resync() -> None:
    room = _room()
    (update,) = _edits(1)
    reaction = react(room, LogEntry(OTHER, "epoch-2", 1, update), OWN)
    assert reaction == Reaction(
        fanout=[protocol.sync_update(update)], check_solved=True, resync=True
    )
    assert room.applied_seq == 0  # the resync re-reads the new log
    assert react(room, LogEntry(OWN, "epoch-2", 1, update), OWN) == Reaction(resync=True)


def test_presence_only_moves_forward() -> None:
    room = _room()
    newer, older = Presence(5, True, 2, 0), Presence(4, True, 9, 9)
    assert react(room, newer, OWN) == Reaction(fanout=[presence_frame(newer)])
    assert react(room, older, OWN) == Reaction()
    assert react(room, newer, OWN) == Reaction()  # the same version again
    assert room.presence == newer
    assert newer_presence(None, older) and not newer_presence(newer, None)


def test_awareness_from_others_only_and_answers_to_queries() -> None:
    room = _room()
    update = encode_awareness_update([(9, 1, '{"user":"x"}')])
    assert react(room, Awareness(OWN, "sx", update), OWN) == Reaction()
    assert react(room, Awareness(OTHER, "sx", update), OWN) == Reaction(
        fanout=[protocol.awareness_message(update)]
    )
    assert react(room, Awareness(OTHER, "sx", b"\xff"), OWN) == Reaction()  # malformed: dropped
    # Nobody of ours is here: nothing to answer; a query of our own is never answered.
    assert react(room, AwarenessQuery(OTHER), OWN) == Reaction()
    room.add_member("gw-a/1", "c1", "student", 0.0)
    mine = encode_awareness_update([(11, 1, '{"user":"me"}')])
    room.receive("gw-a/1", protocol.awareness_message(mine), 0.0)
    assert react(room, AwarenessQuery(OTHER), OWN) == Reaction(publish_awareness=[("sc1", mine)])
    assert room.awareness.owners[9] == "sx"  # the relayed id's owner is remembered
    assert react(room, AwarenessQuery(OWN), OWN) == Reaction()


def test_solved_and_the_close_of_this_session_only() -> None:
    room = _room()
    assert react(room, Solved(3), OWN) == Reaction(fanout=[protocol.SOLVED])
    assert room.solved
    # Another gateway saw the text stop matching: the flag is down here too, and this
    # gateway checks its own text again (nothing for the members: no event for it).
    assert react(room, Unsolved(4), OWN) == Reaction(check_solved=True)
    # The text (the template) does not match: no news, since the flag here is down too
    # (were it still up, the check would report the change).
    assert room.solved_check() is None
    assert react(room, SessionClosed("older-session", "mentor-left"), OWN) == Reaction()
    assert react(room, SessionClosed("session-1", "empty"), OWN) == Reaction(dismiss="empty")


def test_decoded_bytes_drive_the_same_decisions() -> None:
    room = _room()
    (update,) = _edits(1)
    message = decode(encode_log_entry(OTHER, "epoch-1", 1, update))
    assert react(room, message, OWN).fanout == [protocol.sync_update(update)]


SENT = Sent(session="s1", epoch="e1", applied_seq=10)


@pytest.mark.parametrize(
    ("head", "epoch_now", "applied_now", "verdict"),
    [
        (Head("s1", 10, "e1", None), "e1", 10, "ok"),
        # Updates applied while the read was in flight: in step, not a loss.
        (Head("s1", 10, "e1", None), "e1", 14, "ok"),
        (Head("s1", 12, "e1", None), "e1", 14, "ok"),
        # The log is ahead of what is applied now: read it.
        (Head("s1", 12, "e1", None), "e1", 10, "catch_up"),
        (Head("s1", 15, "e1", None), "e1", 14, "catch_up"),
        # Behind what was applied when asked: a failover lost writes.
        (Head("s1", 9, "e1", None), "e1", 10, "resync"),
        (Head("s1", 9, "e1", None), "e1", 12, "resync"),
        # Redis lost the room and someone re-seeded it (another epoch).
        (Head("s1", 10, "e2", None), "e1", 10, "resync"),
        (Head("s1", 10, None, None), "e1", 10, "resync"),
        # No state: lost (resync) unless its tomb says this session closed.
        (Head(None, 0, None, None), "e1", 10, "resync"),
        (Head(None, 0, None, "s0"), "e1", 10, "resync"),
        (Head(None, 0, None, "s1"), "e1", 10, "dismiss"),
        # Another session: this one is over.
        (Head("s2", 1, "e9", None), "e1", 10, "dismiss"),
        # This gateway resynced the room meanwhile: the read says nothing.
        (Head("s1", 3, "e2", None), "e2", 3, "stale"),
        (Head(None, 0, None, None), "e3", 10, "stale"),
    ],
)
def test_head_verdict(head: Head, epoch_now: str, applied_now: int, verdict: str) -> None:
    assert head_verdict(SENT, head, epoch_now, applied_now) == verdict
