"""Keepalive: once per ``KEEPALIVE_SECONDS`` every socket that sent nothing since the
last visit gets a ping (and every socket that asked with ``?heartbeat=1`` a heartbeat
event); one that does not answer the ping within ``KEEPALIVE_TIMEOUT_SECONDS`` is closed
(1011).

One loop for the whole gateway instead of websockets' task per connection (each task
and its timer cost memory on every idle socket). Once per interval the loop takes the
sockets as they are (a round) and visits them a few at a time, spread evenly over the
interval with turns at least ``TURN_SECONDS`` apart: pinging a third of 5,000 sockets in
one callback, as the loop did with one slice a second, stalled the gateway (and every
keystroke in flight) for 15-70 ms (docs/bench/tail.md). A socket that sent a message
since the last visit is alive and needs no ping (in the wide benchmark the pings and
pongs were 333 writes and 333 reads a second for 3,200 deliveries); a silent one is
still noticed within ``KEEPALIVE_SECONDS + KEEPALIVE_TIMEOUT_SECONDS``. The heartbeat
(one shared frame) lets a browser, which never sees pings, notice a silent gateway; the
pings' deadlines sit in one queue in the order they were sent, so checking them costs
nothing per idle socket.
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

TURN_SECONDS = 0.02  # the shortest pause between turns: 5,000 sockets in 3 s are 34 a turn
LONGEST_PAUSE = 0.25  # the longest: missed pings are noticed at least this often
CLOSE_TIMEOUT = 0.5  # closing a socket that missed its ping


def pacing(sockets: int, interval: float) -> tuple[int, float]:
    """(sockets per turn, pause between turns) for a round of ``sockets`` spread evenly
    over ``interval``: as few per turn as the shortest pause allows."""
    most = max(1, int(interval / TURN_SECONDS))
    turns = min(most, max(sockets, int(interval / LONGEST_PAUSE), 1))
    return max(1, -(-sockets // turns)), interval / turns


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
        heartbeat = ws_frame(protocol.HEARTBEAT)
        deadlines: deque[tuple[float, RoomConnection, asyncio.Future[float]]] = deque()
        loop = asyncio.get_running_loop()
        round_: deque[RoomConnection] = deque()
        round_due = loop.time()
        share, pause = pacing(0, interval)
        while True:
            await asyncio.sleep(pause)
            now = loop.time()
            while deadlines and deadlines[0][0] <= now:
                _, ws, waiter = deadlines.popleft()
                if not waiter.done() and ws.protocol.state is State.OPEN:
                    # It missed a ping, so it will not answer a close handshake either.
                    ws.close_timeout = CLOSE_TIMEOUT
                    self._delivery.disconnect_soon(
                        ws, CloseCode.INTERNAL_ERROR, "keepalive ping timeout"
                    )
            if not round_ and now >= round_due:
                # A new round: the sockets as they are now, once per interval.
                round_.extend(self._registry.sockets())
                round_due = now + interval
                share, pause = pacing(len(round_), interval)
            for _ in range(min(share, len(round_))):
                ws = round_.popleft()
                if ws.protocol.state is not State.OPEN:
                    continue
                if ws.heartbeat:  # stock clients would log each one as unknown
                    self._delivery.send_framed(ws, heartbeat)
                if ws.heard:  # it spoke since the last visit: alive, no ping needed
                    ws.heard = False
                    continue
                try:
                    waiter = cast(asyncio.Future[float], await ws.ping())
                except ConnectionClosed:
                    continue
                deadlines.append((loop.time() + timeout, ws, waiter))
