"""Bytes written to clients: websocket framing done once per fan-out, presence frames."""

from __future__ import annotations

from services.gateway.channel import Presence
from shared import protocol


def ws_frame(payload: bytes) -> bytes:
    """An unmasked, unfragmented binary websocket frame (RFC 6455 5.2) carrying payload."""
    n = len(payload)
    if n < 126:
        return bytes((0x82, n)) + payload
    if n < 65536:
        return b"\x82\x7e" + n.to_bytes(2, "big") + payload
    return b"\x82\x7f" + n.to_bytes(8, "big") + payload


def presence_frame(counts: Presence) -> bytes:
    return protocol.presence(
        mentor=counts.mentor, students=counts.students, watchers=counts.watchers
    )
