"""The room channel's messages: one codec for every message on a room's pub/sub channel.

A message is a kind byte, then fields separated by NUL; the last field may hold any
bytes (a Yjs update). The Lua scripts (``scripts.py``; ``eventrelay.py`` for ``R`` and
``M``) publish ``U``, ``P``, ``S``, ``C``, ``R`` and ``M`` in the same statement that
changes the room, so the channel's order is the state's order; the gateway publishes
``A`` and ``Q`` itself (docs/redis.md):

=====  ==========================================  ===========================================
kind   fields                                       meaning
=====  ==========================================  ===========================================
``U``  gateway, epoch, seq, update                  log entry ``seq`` of the room (written by)
``A``  gateway, owner, awareness update             awareness of one member (owner: role+client)
``Q``  gateway                                      a gateway started serving the room: who's here?
``P``  version, mentor 0/1, students, watchers      member counts (``version`` orders them)
``S``  seq                                          the text matched the solution at ``seq``
``C``  session, reason                              the session closed
``R``  run event (JSON)                             a member shared a run (``runs.py``)
``M``  chat or hint event (JSON)                    a chat message or hint (``chat.py``)
=====  ==========================================  ===========================================

Pure: bytes in, values out, no I/O. ``decode`` raises ``ChannelError`` on anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The kinds the shared-event script writes (``eventrelay.keep_and_publish``).
RUN_KIND: Final = b"R"
CHAT_KIND: Final = b"M"


class ChannelError(ValueError):
    """A channel message that no writer of this schema produces."""


@dataclass(frozen=True, slots=True)
class LogEntry:
    origin: bytes  # the publishing gateway's id
    epoch: str
    seq: int
    update: bytes


@dataclass(frozen=True, slots=True)
class Awareness:
    origin: bytes
    owner: str  # who owns the update's ids (``Member.owner``)
    update: bytes


@dataclass(frozen=True, slots=True)
class AwarenessQuery:
    origin: bytes


@dataclass(frozen=True, slots=True)
class Presence:
    """The room's member counts, fleet-wide."""

    version: int  # 'pv': bumped by every change of the counts
    mentor: bool
    students: int
    watchers: int


@dataclass(frozen=True, slots=True)
class Solved:
    seq: int


@dataclass(frozen=True, slots=True)
class Unsolved:
    """The text stopped matching (the flag went back to 0)."""

    seq: int


@dataclass(frozen=True, slots=True)
class SessionClosed:
    session: str
    reason: str


@dataclass(frozen=True, slots=True)
class RunShared:
    event: bytes  # the ``run`` event's JSON, as members get it


@dataclass(frozen=True, slots=True)
class ChatShared:
    event: bytes  # a chat or hint event's JSON, as members get it


Message = (
    LogEntry
    | Awareness
    | AwarenessQuery
    | Presence
    | Solved
    | Unsolved
    | SessionClosed
    | RunShared
    | ChatShared
)


def encode_log_entry(origin: bytes, epoch: str, seq: int, update: bytes) -> bytes:
    return b"U%s\x00%s\x00%d\x00%s" % (origin, epoch.encode(), seq, update)


def awareness_prefix(origin: bytes) -> bytes:
    """What precedes the update in this gateway's ``A`` messages (computed once)."""
    return b"A" + origin + b"\x00"


def encode_awareness(origin: bytes, owner: str, update: bytes) -> bytes:
    return awareness_prefix(origin) + owner.encode() + b"\x00" + update


def encode_query(origin: bytes) -> bytes:
    return b"Q" + origin


def encode_presence(counts: Presence) -> bytes:
    return b"P%d\x00%d\x00%d\x00%d" % (
        counts.version,
        counts.mentor,
        counts.students,
        counts.watchers,
    )


def encode_solved(seq: int) -> bytes:
    return b"S%d" % seq


def encode_unsolved(seq: int) -> bytes:
    return b"N%d" % seq


def encode_session_closed(session: str, reason: str) -> bytes:
    return b"C%s\x00%s" % (session.encode(), reason.encode())


def encode_run(event: bytes) -> bytes:
    return RUN_KIND + event


def _int(raw: bytes) -> int:
    if not raw.isdigit():
        raise ChannelError(f"not a count: {raw[:20]!r}")
    return int(raw)


def _text(raw: bytes) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError:
        raise ChannelError("a text field is not UTF-8") from None


def decode(data: bytes) -> Message:
    """One channel message as a value (raises ChannelError)."""
    kind, body = data[:1], data[1:]
    if kind == b"U":
        parts = body.split(b"\x00", 3)
        if len(parts) != 4:
            raise ChannelError("a log entry needs gateway, epoch, seq and update")
        origin, epoch, seq, update = parts
        return LogEntry(origin, _text(epoch), _int(seq), update)
    if kind == b"A":
        parts = body.split(b"\x00", 2)
        if len(parts) != 3:
            raise ChannelError("an awareness message needs gateway, owner and update")
        origin, owner, update = parts
        return Awareness(origin, _text(owner), update)
    if kind == b"Q":
        return AwarenessQuery(body)
    if kind == b"P":
        parts = body.split(b"\x00")
        if len(parts) != 4 or parts[1] not in (b"0", b"1"):
            raise ChannelError("presence needs version, mentor 0/1, students, watchers")
        version, mentor, students, watchers = parts
        return Presence(_int(version), mentor == b"1", _int(students), _int(watchers))
    if kind == b"S":
        return Solved(_int(body))
    if kind == b"N":
        return Unsolved(_int(body))
    if kind == b"C":
        session, sep, reason = body.partition(b"\x00")
        if not sep:
            raise ChannelError("a close needs session and reason")
        return SessionClosed(_text(session), _text(reason))
    if kind == RUN_KIND:
        return RunShared(body)
    if kind == CHAT_KIND:
        return ChatShared(body)
    raise ChannelError(f"unknown kind {kind!r}")
