"""Following the room channels: what arrives from Redis reaches the rooms served here.

The relay hands over every message of every followed channel; it is decoded
(``channel.py``), decided on by the pure ``inbound.react`` and carried out here:
fan-out to local members, an awareness answer, a solved check, a catch-up, a resync
flag or the room sent home. Messages that arrive while a room is still loading wait in
its handle and are replayed once it is loaded (``on_loaded``).
"""

from __future__ import annotations

import logging

from services.gateway.background import Background
from services.gateway.catchup import CatchUp
from services.gateway.channel import ChannelError, awareness_prefix, decode, encode_query
from services.gateway.delivery import Delivery
from services.gateway.inbound import react
from services.gateway.metrics import GatewayMetrics
from services.gateway.outbox import Outbox
from services.gateway.registry import RoomHandle, RoomRegistry
from services.gateway.solved import SolvedChecks
from shared.keys import Keys

log = logging.getLogger(__name__)


class ChannelFollower:
    def __init__(
        self,
        gateway_id: str,
        keys: Keys,
        registry: RoomRegistry,
        delivery: Delivery,
        outbox: Outbox,
        catch_up: CatchUp,
        solved: SolvedChecks,
        metrics: GatewayMetrics,
        background: Background,
    ) -> None:
        self._own = gateway_id.encode()  # compared with the origin of every message
        self._awareness_prefix = awareness_prefix(self._own)
        self._keys = keys
        self._registry = registry
        self._delivery = delivery
        self._outbox = outbox
        self._catch_up = catch_up
        self._solved = solved
        self._metrics = metrics
        self._background = background

    def on_message(self, channel: str, data: bytes) -> None:
        """One message from the relay (``channel`` is the room's channel name)."""
        block_id = self._keys.room_from_channel(channel)
        self._metrics.redis_messages[data[:1]] += 1
        handle = self._registry.get(block_id) if block_id is not None else None
        if handle is None or handle.closed:
            return
        if handle.core is None:
            handle.early.append(data)
            return
        self._apply(handle, data)

    def _apply(self, handle: RoomHandle, data: bytes) -> None:
        core = handle.core
        assert core is not None
        try:
            message = decode(data)
        except ChannelError as exc:
            log.error("dropped a malformed message on room %s: %s", core.block_id, exc)
            return
        reaction = react(core, message, self._own)
        for frame in reaction.fanout:
            self._delivery.fanout(handle.sockets, frame)
        if reaction.publish_awareness:
            channel = self._keys.room(core.block_id).channel
            for owner, update in reaction.publish_awareness:
                tagged = self._awareness_prefix + owner.encode() + b"\x00" + update
                self._outbox.awareness(channel, tagged)
        if reaction.check_solved:
            self._solved.schedule(handle)
        if reaction.resync:
            handle.needs_resync = True
        if reaction.catch_up and not handle.catching_up:
            self._background.spawn(self._catch_up.run(handle))
        if reaction.dismiss is not None:
            self._registry.dismiss(core.block_id, handle, reaction.dismiss)

    def on_loaded(self, handle: RoomHandle) -> None:
        """The room's core is loaded: apply what the channel brought meanwhile, check
        the text, and ask the other gateways for their members' awareness (it is not
        logged)."""
        early, handle.early = handle.early, []
        for data in early:
            if handle.closed:
                break
            self._apply(handle, data)
        self._solved.schedule(handle)
        self._outbox.awareness(self._keys.room(handle.block.id).channel, encode_query(self._own))
