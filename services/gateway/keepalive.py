"""Keepalive: once per ``KEEPALIVE_SECONDS`` every socket gets a ping (and, if it asked
with ``?heartbeat=1``, a heartbeat event); one that does not answer the ping within
``KEEPALIVE_TIMEOUT_SECONDS`` is closed (1011).

One loop for the whole gateway instead of websockets' task per connection (each task
and its timer cost memory on every idle socket). The sockets are visited a slice at a
time, about one slice a second: pinging 5,000 sockets at once would stall the gateway
(and the clients) for a write per socket in one go. The heartbeat (one shared frame)
lets a browser, which never sees pings, notice a silent gateway; the pings' deadlines
sit in one queue in the order they were sent, so checking them costs nothing per idle
socket.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import cast

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from services.gateway.connection import RoomConnection
from services.gateway.delivery import Delivery
from services.gateway.registry import RoomRegistry
from services.gateway.wire import ws_frame
from shared import protocol
from shared.protocol import CloseCode

SLICES = 30  # the sockets are visited in this many turns per keepalive interval
CLOSE_TIMEOUT = 0.5  # closing a socket that missed its ping


class Keepalive:
    def __init__(
        self, interval: float, timeout: float, registry: RoomRegistry, delivery: Delivery
    ) -> None:
        self._interval = interval
        self._timeout = timeout
        self._registry = registry
        self._delivery = delivery

    async def run(self) -> None:
        interval, timeout = self._interval, self._timeout
        slices = max(1, min(SLICES, int(interval)))
        heartbeat = ws_frame(protocol.HEARTBEAT)
        deadlines: deque[tuple[float, RoomConnection, asyncio.Future[float]]] = deque()
        loop = asyncio.get_running_loop()
        turn = 0
        while True:
            await asyncio.sleep(interval / slices)
            now = loop.time()
            while deadlines and deadlines[0][0] <= now:
                _, ws, waiter = deadlines.popleft()
                if not waiter.done() and ws.protocol.state is State.OPEN:
                    # It missed a ping, so it will not answer a close handshake either.
                    ws.close_timeout = CLOSE_TIMEOUT
                    self._delivery.disconnect_soon(
                        ws, CloseCode.INTERNAL_ERROR, "keepalive ping timeout"
                    )
            turn = (turn + 1) % slices
            sockets = [ws for ws in self._registry.sockets() if hash(ws) % slices == turn]
            for ws in sockets:
                if ws.protocol.state is not State.OPEN:
                    continue
                if ws.heartbeat:  # stock clients would log each one as unknown
                    self._delivery.send_framed(ws, heartbeat)
                try:
                    waiter = cast(asyncio.Future[float], await ws.ping())
                except ConnectionClosed:
                    continue
                deadlines.append((loop.time() + timeout, ws, waiter))
