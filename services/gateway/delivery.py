"""Bytes to client sockets: one message, a fan-out, a disconnect.

Nothing here awaits a client: frames are written synchronously to each socket's
transport, one encoded websocket frame serving every socket of a fan-out. A socket whose
unsent bytes pass ``CLIENT_SEND_BUFFER_BYTES`` is disconnected with 4000 (slow
consumer), so a stuck client never holds up the others or grows the gateway's memory.
"""

from __future__ import annotations

from collections.abc import Mapping

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from services.gateway.background import Background
from services.gateway.connection import RoomConnection
from services.gateway.metrics import GatewayMetrics
from services.gateway.wire import ws_frame
from shared.protocol import CloseCode


class Delivery:
    def __init__(
        self, send_buffer_bytes: int, metrics: GatewayMetrics, background: Background
    ) -> None:
        self._limit = send_buffer_bytes
        self._metrics = metrics
        self._background = background
        self._slow: set[RoomConnection] = set()

    def send(self, ws: RoomConnection, frame: bytes) -> None:
        """Write one message now, without waiting."""
        self._write(ws, ws_frame(frame))
        self._metrics.messages_out += 1

    def fanout(
        self, sockets: Mapping[str, RoomConnection], frame: bytes, skip: str | None = None
    ) -> None:
        """The same message to every socket (but ``skip``'s), framed once."""
        wire = ws_frame(frame)
        write = self._write
        sent = 0
        for member_id, ws in sockets.items():
            if member_id != skip:
                write(ws, wire)
                sent += 1
        if sent:
            self._metrics.messages_out += sent

    def send_framed(self, ws: RoomConnection, wire: bytes) -> None:
        """Write a frame already encoded with ``ws_frame`` (one shared by many sockets)."""
        self._write(ws, wire)

    def _write(self, ws: RoomConnection, wire: bytes) -> None:
        # Server frames are unmasked and we never fragment or compress, so one encoded
        # frame serves every socket; websockets' own writes (pings, close) are whole
        # frames too, so nothing interleaves. A socket that is not open gets nothing.
        if ws.protocol.state is not State.OPEN:
            return
        transport = ws.transport
        transport.write(wire)
        if transport.get_write_buffer_size() > self._limit and ws not in self._slow:
            self._slow.add(ws)
            self._background.spawn(self._disconnect_slow(ws))

    async def _disconnect_slow(self, ws: RoomConnection) -> None:
        try:
            await self.disconnect(ws, CloseCode.SLOW_CONSUMER, "too far behind")
        finally:
            self._slow.discard(ws)

    async def disconnect(self, ws: RoomConnection, code: int, reason: str) -> None:
        """Close one socket with a code of the registry (counted by code)."""
        self._metrics.closes.labels(str(code)).inc()
        try:
            await ws.close(code, reason)
        except ConnectionClosed:
            pass

    def disconnect_soon(self, ws: RoomConnection, code: int, reason: str) -> None:
        """``disconnect`` in the background (from a synchronous path)."""
        self._background.spawn(self.disconnect(ws, code, reason))
