"""The frame path: a member's messages into the room core, its effects out.

Whole binary frames reach a socket's ``Reader`` straight from the event loop's read
callback (``connection.py``); the reader hands each to the room core and carries out
the returned ``Effects`` at once (a ``run-result`` control frame goes to ``runs.py``
instead of the core): replies to the sender, fan-out to the room's other
local members, the update and awareness queued for Redis (``outbox.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time

from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from services.gateway.channel import awareness_prefix
from services.gateway.chat import ChatRelay, control_type
from services.gateway.connection import RoomConnection
from services.gateway.delivery import Delivery
from services.gateway.history import AuthorTags
from services.gateway.metrics import GatewayMetrics
from services.gateway.outbox import Outbox
from services.gateway.registry import RoomHandle
from services.gateway.room import Effects, RoomCore
from services.gateway.runs import CONTROL_TAG, RunRelay
from shared.keys import Keys
from shared.protocol import CloseCode

log = logging.getLogger(__name__)


class FramePath:
    def __init__(
        self,
        gateway_id: str,
        keys: Keys,
        delivery: Delivery,
        outbox: Outbox,
        runs: RunRelay,
        chat: ChatRelay,
        authors: AuthorTags,
        metrics: GatewayMetrics,
    ) -> None:
        self._awareness_prefix = awareness_prefix(gateway_id.encode())
        self._keys = keys
        self.delivery = delivery
        self._outbox = outbox
        self.runs = runs
        self.chat = chat
        self._authors = authors
        self.metrics = metrics

    def carry_out(
        self, handle: RoomHandle, member_id: str, ws: RoomConnection | None, effects: Effects
    ) -> None:
        """Do what the core decided; ``ws`` is the sender (None: it has gone)."""
        if ws is not None:
            for frame in effects.reply:
                self.delivery.send(ws, frame)
        for frame in effects.broadcast:
            self.delivery.fanout(handle.sockets, frame, skip=member_id)
        core = handle.core
        if effects.publish_update is not None and core is not None:
            author = self._authors.tag(core, member_id)
            self._outbox.update(handle.block.id, core.session, effects.publish_update, author)
        if effects.publish_awareness is not None:
            channel = self._keys.room(handle.block.id).channel
            owner = effects.awareness_owner.encode() + b"\x00"
            self._outbox.awareness(
                channel, self._awareness_prefix + owner + effects.publish_awareness
            )

    def forget(self, member_id: str) -> None:
        """The member left: its author tag goes."""
        self._authors.forget(member_id)

    async def read(self, ws: RoomConnection, handle: RoomHandle, member_id: str) -> None:
        """Read the socket until it closes.

        Whole binary frames reach the ``Reader`` from the event loop's read callback; the
        handler only waits, and reads with ``recv`` what queued behind the socket's join
        or came otherwise framed."""
        assert handle.core is not None
        reader = Reader(self, ws, handle, handle.core, member_id)
        ws.listener = reader
        loop = asyncio.get_running_loop()
        try:
            while ws.protocol.state is not State.CLOSED:
                if ws.backlog:
                    frame = await ws.recv()
                    ws.backlog -= 1
                    reader.message(frame)
                else:
                    reader.waiter = loop.create_future()
                    await reader.waiter
        except ConnectionClosed:
            pass
        finally:
            ws.listener = None
            reader.waiter = None


class Reader:
    """One room socket's messages, as they arrive (``RoomConnection.listener``)."""

    __slots__ = ("core", "handle", "member_id", "path", "stopped", "waiter", "ws")

    def __init__(
        self,
        path: FramePath,
        ws: RoomConnection,
        handle: RoomHandle,
        core: RoomCore,
        member_id: str,
    ) -> None:
        self.path = path
        self.ws = ws
        self.handle = handle
        self.core = core
        self.member_id = member_id
        self.stopped = False  # the socket is being closed: what it sends is dropped
        self.waiter: asyncio.Future[None] | None = None  # the handler waiting for news

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stop(self, code: int | None = None, reason: str = "") -> None:
        """Nothing more is read from this socket; its handler ends once it has closed."""
        self.stopped = True
        if code is not None:
            self.path.delivery.disconnect_soon(self.ws, code, reason)

    def message(self, frame: bytes | str) -> None:
        if self.stopped:
            return
        path = self.path
        path.metrics.messages_in += 1
        if self.handle.closed:
            self.stop()  # room-closed and 4410 are on their way (RoomRegistry.dismiss)
        elif isinstance(frame, str):
            self.stop(CloseCode.BAD_REQUEST, "text frames are not allowed")
        else:
            try:
                if frame[:1] == CONTROL_TAG and control_type(frame):  # chat, hints (chat.py)
                    effects = path.chat.receive(self.core, self.member_id, frame, time.monotonic())
                elif frame[:1] == CONTROL_TAG:  # a shared run (services/gateway/runs.py)
                    effects = path.runs.receive(self.core, self.member_id, frame, time.monotonic())
                else:
                    effects = self.core.receive(self.member_id, frame, time.monotonic())
                path.carry_out(self.handle, self.member_id, self.ws, effects)
            except Exception:
                log.exception("a message from %s failed", self.member_id)
                self.stop(CloseCode.INTERNAL_ERROR, "internal error")
                return
            if effects.close is not None:
                self.stop(effects.close, effects.reason)
