"""The rooms this gateway serves: one ``RoomHandle`` per room, and sending a room home.

A handle holds the room's pure core (once loaded), its local sockets and the shell's
flags. The registry subscribes to a room's channel for as long as the room is listed,
and ``dismiss`` ends a room here: every local member gets ``room-closed`` and 4410.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from services.gateway.blocks import Block
from services.gateway.connection import RoomConnection
from services.gateway.delivery import Delivery
from services.gateway.metrics import GatewayMetrics
from services.gateway.relay import Subscriptions
from services.gateway.room import RoomCore
from shared import protocol
from shared.keys import Keys
from shared.protocol import CloseCode


@dataclass(slots=True, eq=False)
class RoomHandle:
    block: Block
    core: RoomCore | None = None  # None until loaded from Redis
    sockets: dict[str, RoomConnection] = field(default_factory=dict)
    early: list[bytes] = field(default_factory=list)  # channel messages before the load
    compacting: bool = False
    catching_up: bool = False
    closed: bool = False
    needs_resync: bool = False  # Redis lost something of ours: re-register and republish
    loaded: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def live(self) -> RoomCore | None:
        """The core of a loaded room that is still open here, else None."""
        return None if self.closed else self.core


class RoomRegistry:
    def __init__(
        self,
        keys: Keys,
        subscriptions: Subscriptions,
        delivery: Delivery,
        metrics: GatewayMetrics,
    ) -> None:
        self._keys = keys
        self._subs = subscriptions
        self._delivery = delivery
        self._metrics = metrics
        self._rooms: dict[str, RoomHandle] = {}

    def get(self, block_id: str) -> RoomHandle | None:
        return self._rooms.get(block_id)

    def items(self) -> list[tuple[str, RoomHandle]]:
        """A copy: callers await between rooms."""
        return list(self._rooms.items())

    def live(self) -> list[tuple[str, RoomHandle, RoomCore]]:
        """Loaded rooms that are open here (a copy)."""
        return [
            (b, h, h.core) for b, h in self._rooms.items() if h.core is not None and not h.closed
        ]

    def sockets(self) -> Iterator[RoomConnection]:
        for handle in list(self._rooms.values()):
            yield from list(handle.sockets.values())

    def add(self, block_id: str, handle: RoomHandle) -> None:
        """List the room and follow its channel (before reading its state)."""
        self._rooms[block_id] = handle
        self._metrics.rooms.set(len(self._rooms))
        self._subs.subscribe(self._keys.room(block_id).channel)

    def remove(self, block_id: str, handle: RoomHandle) -> None:
        """Unlist the room (if ``handle`` is still the listed one) and leave its channel.
        Updates still queued in the outbox go out without it."""
        if self._rooms.get(block_id) is handle:
            del self._rooms[block_id]
            self._metrics.rooms.set(len(self._rooms))
            self._subs.unsubscribe(self._keys.room(block_id).channel)

    def dismiss(self, block_id: str, handle: RoomHandle, reason: str) -> None:
        """The room's session closed: everyone here goes back to the lobby."""
        handle.closed = True
        self.remove(block_id, handle)
        frame = protocol.room_closed(reason)
        for ws in list(handle.sockets.values()):
            self._delivery.send(ws, frame)
            self._delivery.disconnect_soon(ws, CloseCode.ROOM_CLOSED, "room closed: " + reason)
