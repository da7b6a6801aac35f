"""coderoom's room-socket wire format: message types, control events, close codes.

Pure functions over bytes, no I/O (see docs/protocol.md). Frames are y-websocket
frames: a lib0 varUint message type followed by its body. coderoom adds message type
100 (control events: one varString holding a JSON object with a ``type``) and a close
code registry in which 4400-4499 means "do not reconnect" and every other code means
"reconnect", the rule stock y-websocket clients already follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Literal

import orjson

from shared.ywire import DecodeError, encode_var_bytes, encode_var_string, read_var_uint


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3
    CONTROL = 100


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


class CloseCode(IntEnum):
    """Close codes. 4400-4499 mirror HTTP 4xx and are terminal; all others reconnect."""

    NORMAL = 1000
    INTERNAL_ERROR = 1011
    SERVICE_RESTART = 1012  # the gateway is shutting down: reconnect (to another one)
    TRY_AGAIN_LATER = 1013  # a dependency (Redis) is unavailable right now
    SLOW_CONSUMER = 4000  # the client fell too far behind; reconnect and resync
    BAD_REQUEST = 4400  # malformed frame, text frame, protocol violation
    FORBIDDEN = 4403  # reserved: refused by policy
    UNKNOWN_BLOCK = 4404  # no such code block (or a malformed id)
    ROOM_FULL = 4409  # the room has MAX_ROOM_MEMBERS members already
    ROOM_CLOSED = 4410  # the mentor left: back to the lobby
    DOC_TOO_LARGE = 4413  # the update would grow the document past MAX_DOC_BYTES
    RATE_LIMITED = 4429  # too many updates, or too many sockets from one address
    UNAVAILABLE = 4503  # the block cannot be loaded right now (MongoDB down)


def should_reconnect(code: int) -> bool:
    """The registry's rule: only 4400-4499 tell a client to stay away."""
    return not 4400 <= code <= 4499


Role = Literal["mentor", "student", "watcher"]
ROLES: tuple[Role, ...] = ("mentor", "student", "watcher")


class ProtocolError(ValueError):
    """A frame that does not follow the protocol; the sender is closed with 4400."""


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded client frame. ``payload`` is the body after the (sub)type."""

    type: MessageType
    sync_type: SyncType | None
    payload: bytes


def decode_message(frame: bytes) -> Message:
    """Split a client frame into type, sync sub-type and payload (not yet validated)."""
    try:
        kind, pos = read_var_uint(frame, 0)
        if kind == MessageType.SYNC:
            sub, pos = read_var_uint(frame, pos)
            if sub > SyncType.UPDATE:
                raise ProtocolError(f"unknown sync message {sub}")
            size, pos = read_var_uint(frame, pos)
            if size != len(frame) - pos:
                raise ProtocolError("sync payload length does not match the frame")
            return Message(MessageType.SYNC, SyncType(sub), frame[pos:])
        if kind == MessageType.AWARENESS:
            size, pos = read_var_uint(frame, pos)
            if size != len(frame) - pos:
                raise ProtocolError("awareness payload length does not match the frame")
            return Message(MessageType.AWARENESS, None, frame[pos:])
        if kind == MessageType.QUERY_AWARENESS:
            return Message(MessageType.QUERY_AWARENESS, None, b"")
        if kind == MessageType.AUTH:
            return Message(MessageType.AUTH, None, frame[pos:])
    except DecodeError as exc:
        raise ProtocolError(str(exc)) from None
    raise ProtocolError(f"unknown message type {kind}")


_SYNC = bytes([MessageType.SYNC])


def sync_step1(state_vector: bytes) -> bytes:
    return _SYNC + b"\x00" + encode_var_bytes(state_vector)


def sync_step2(update: bytes) -> bytes:
    return _SYNC + b"\x01" + encode_var_bytes(update)


def sync_update(update: bytes) -> bytes:
    return _SYNC + b"\x02" + encode_var_bytes(update)


def awareness_message(update: bytes) -> bytes:
    return bytes([MessageType.AWARENESS]) + encode_var_bytes(update)


def permission_denied(reason: str) -> bytes:
    """y-protocols auth message, sub-type 0 = permission denied."""
    return bytes([MessageType.AUTH, 0]) + encode_var_string(reason)


_CONTROL = bytes([MessageType.CONTROL])


def control(event: dict[str, Any]) -> bytes:
    """A control event frame: type 100 + varString(JSON), length in UTF-8 bytes."""
    return control_frame(orjson.dumps(event))


def control_frame(event_json: bytes) -> bytes:
    """A control event frame around an event already encoded as JSON (a relayed run)."""
    return _CONTROL + encode_var_bytes(event_json)


def decode_control(frame: bytes) -> dict[str, Any]:
    """Inverse of control() (used by clients and tests)."""
    kind, pos = read_var_uint(frame, 0)
    if kind != MessageType.CONTROL:
        raise ProtocolError("not a control event")
    size, pos = read_var_uint(frame, pos)
    if size != len(frame) - pos:
        raise ProtocolError("control payload length does not match the frame")
    event = orjson.loads(frame[pos:])
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        raise ProtocolError("control event without a type")
    return event


def welcome(
    *,
    role: Role,
    client_id: str,
    resume_token: str | None,
    session: str,
    block_id: str,
    grace_seconds: float,
) -> bytes:
    return control(
        {
            "type": "welcome",
            "role": role,
            "clientId": client_id,
            "resumeToken": resume_token,
            "session": session,
            "blockId": block_id,
            "graceSeconds": grace_seconds,
        }
    )


def presence(*, mentor: bool, students: int, watchers: int) -> bytes:
    return control(
        {
            "type": "presence",
            "mentor": mentor,
            "students": students,
            "watchers": watchers,
        }
    )


SOLVED = control({"type": "solved"})
# Sent by the keepalive loop once per KEEPALIVE_SECONDS: a browser cannot see pings,
# so this is how it tells a live but quiet gateway from a silent connection.
HEARTBEAT = control({"type": "heartbeat"})


def room_closed(reason: str) -> bytes:
    return control({"type": "room-closed", "reason": reason})
