"""What a room does with a message from its channel (pure: returns what the shell does).

The room core (``room.py``) applies updates and awareness; this module takes the
decisions around them: an update of our own coming back in sequence (check the text
once, fleet-wide), an update of another epoch (Redis lost the room: apply it, resync),
a sequence gap (read the log), presence counts older than the ones shown (drop them),
another gateway asking who is here (answer with our members' awareness), the
session's close (send everyone home), a shared run (to every member). ``follower.py``
carries out the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from services.gateway.channel import (
    Awareness,
    AwarenessQuery,
    ChatShared,
    LogEntry,
    Message,
    Presence,
    RunShared,
    SessionClosed,
    Solved,
    Unsolved,
)
from services.gateway.room import RoomCore
from services.gateway.wire import presence_frame
from shared import protocol


@dataclass(slots=True)
class Reaction:
    """What the shell must do after one channel message."""

    fanout: list[bytes] = field(default_factory=list)  # to every local member
    # our members' states, one update per owner, for the other gateways
    publish_awareness: list[tuple[str, bytes]] = field(default_factory=list)
    check_solved: bool = False  # the text may have changed: check it (once per tick)
    catch_up: bool = False  # an entry was skipped: read the log from applied_seq
    resync: bool = False  # Redis lost the room: re-register and republish
    dismiss: str | None = None  # the session closed, for this reason: everyone home


def react(core: RoomCore, message: Message, own: bytes) -> Reaction:
    """Apply ``message`` to ``core``; ``own`` is this gateway's id (the origin of our
    own messages, which come back on the channel too)."""
    out = Reaction()
    if isinstance(message, LogEntry):
        mine = message.origin == own
        if message.epoch != core.epoch:
            # Redis lost the room and someone re-seeded it: apply, then resync.
            if not mine:
                out.fanout.append(core.apply_foreign_update(message.update))
                out.check_solved = True
            out.resync = True
            return out
        before = core.applied_seq
        frame, gap = core.apply_remote_update(message.seq, message.update, mine)
        if frame is not None:
            out.fanout.append(frame)
        # The gateway that published an update checks the text once the update is back
        # in sequence: by then it holds every update up to it, so the last update of a
        # room is always checked, and once, fleet-wide.
        out.check_solved = mine and core.applied_seq != before
        out.catch_up = gap
    elif isinstance(message, Awareness):
        if message.origin != own:
            frame = core.apply_remote_awareness(message.update, message.owner)
            if frame is not None:
                out.fanout.append(frame)
    elif isinstance(message, AwarenessQuery):
        if message.origin != own:
            out.publish_awareness = core.local_awareness()
    elif isinstance(message, Presence):
        if newer_presence(core.presence, message):
            core.presence = message
            out.fanout.append(presence_frame(message))
    elif isinstance(message, Solved):
        core.solved = True
        out.fanout.append(protocol.SOLVED)
    elif isinstance(message, Unsolved):
        # Another gateway saw the text stop matching. The next match may come from an
        # update that is this gateway's to check: check against the flag as it is now.
        core.unsolved()
        out.check_solved = True
    elif isinstance(message, SessionClosed):
        if message.session == core.session:
            out.dismiss = message.reason
    elif isinstance(message, RunShared | ChatShared):
        out.fanout.append(protocol.control_frame(message.event))
    return out


def newer_presence(known: Presence | None, seen: Presence | None) -> bool:
    """Whether ``seen`` should replace the counts ``known`` (versions only grow)."""
    return seen is not None and (known is None or seen.version > known.version)


# What the periodic check does with a room's head as read from Redis (``head_verdict``).
HeadVerdict = Literal["ok", "catch_up", "resync", "dismiss", "stale"]


@dataclass(frozen=True, slots=True)
class Sent:
    """A room as this gateway held it when its head was asked for."""

    session: str
    epoch: str
    applied_seq: int


@dataclass(frozen=True, slots=True)
class Head:
    """A room's head in Redis: state's session, seq and epoch (None: no state), tomb."""

    session: str | None
    seq: int
    epoch: str | None
    tomb: str | None


def head_verdict(sent: Sent, head: Head, epoch_now: str, applied_now: int) -> HeadVerdict:
    """Whether a served room drifted from Redis (the periodic check, ``Resync``).

    The head is read some time after ``sent`` was taken, while the room goes on applying
    its channel: compared with what was applied *when asked*, a head behind means Redis
    lost writes (a failover), while against what is applied *now* it would only mean
    updates arrived meanwhile — the false resyncs that the 800-room benchmark showed by
    the hundred. A resync in between (another epoch here) makes the read stale.

    ``ok``: in step (check the text); ``catch_up``: the log is ahead, read it;
    ``resync``: Redis lost the room or writes of it; ``dismiss``: the session is over."""
    if epoch_now != sent.epoch:
        return "stale"
    if head.session is None:
        return "dismiss" if head.tomb == sent.session else "resync"
    if head.session != sent.session:
        return "dismiss"
    if head.epoch != sent.epoch or head.seq < sent.applied_seq:
        return "resync"
    if head.seq > applied_now:
        return "catch_up"
    return "ok"
