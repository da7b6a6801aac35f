"""Keepalive: every socket is pinged once per ``KEEPALIVE_SECONDS``; one that did not
answer the previous ping is closed (1011).

One loop for the whole gateway instead of websockets' task per connection (each task
and its timer cost memory on every idle socket). The sockets are pinged a slice at a
time, about one slice a second: pinging 5,000 sockets at once would stall the gateway
(and the clients) for a write per socket in one go.
"""

from __future__ import annotations

import asyncio
from typing import cast

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from services.gateway.connection import RoomConnection
from services.gateway.delivery import Delivery
from services.gateway.registry import RoomRegistry
from shared.protocol import CloseCode

SLICES = 30  # the sockets are pinged in this many turns per keepalive interval


class Keepalive:
    def __init__(self, interval: float, registry: RoomRegistry, delivery: Delivery) -> None:
        self._interval = interval
        self._registry = registry
        self._delivery = delivery

    async def run(self) -> None:
        interval = self._interval
        slices = max(1, min(SLICES, int(interval)))
        waiters: dict[RoomConnection, asyncio.Future[float]] = {}
        turn = 0
        while True:
            await asyncio.sleep(interval / slices)
            turn = (turn + 1) % slices
            if turn == 0:  # once a round: forget the sockets that have gone
                waiters = {ws: w for ws, w in waiters.items() if ws.protocol.state is State.OPEN}
            sockets = [ws for ws in self._registry.sockets() if hash(ws) % slices == turn]
            for ws in sockets:
                if ws.protocol.state is not State.OPEN:
                    continue
                waiter = waiters.pop(ws, None)
                if waiter is not None and not waiter.done():
                    self._delivery.disconnect_soon(
                        ws, CloseCode.INTERNAL_ERROR, "keepalive ping timeout"
                    )
                    continue
                try:
                    waiters[ws] = cast(asyncio.Future[float], await ws.ping())
                except ConnectionClosed:
                    pass
