"""Reading a room's log beyond what this gateway applied (after a gap, for compaction).

Pub/sub is at most once: a sequence gap on the channel, a periodic check that finds the
log ahead, or a compaction about to snapshot the room make the room read its log here.
"""

from __future__ import annotations

from services.gateway.delivery import Delivery
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import RoomHandle, RoomRegistry
from services.gateway.solved import SolvedChecks
from services.gateway.store import RoomStore
from services.gateway.ydoc import EMPTY_UPDATE
from shared import protocol


class CatchUp:
    def __init__(
        self,
        store: RoomStore,
        registry: RoomRegistry,
        delivery: Delivery,
        solved: SolvedChecks,
        metrics: GatewayMetrics,
    ) -> None:
        self._store = store
        self._registry = registry
        self._delivery = delivery
        self._solved = solved
        self._metrics = metrics

    async def run(self, handle: RoomHandle) -> None:
        """Apply what the room log has beyond ``applied_seq``; send the news to the room."""
        core = handle.core
        if core is None or handle.catching_up:
            return
        handle.catching_up = True
        try:
            self._metrics.catchups.inc()
            loaded = await self._store.load(core.block_id, core.applied_seq)
            if isinstance(loaded, str) or loaded.session != core.session:
                if loaded == "":
                    handle.needs_resync = True  # Redis lost the room: not a close
                else:
                    self._registry.dismiss(core.block_id, handle, "mentor-left")
                return
            if loaded.epoch != core.epoch:
                handle.needs_resync = True
                return
            before = core.doc.get_state()
            core.load(loaded.snapshot, loaded.entries, loaded.seq)
            diff = core.doc.get_update(before)
            if diff != EMPTY_UPDATE:
                self._delivery.fanout(handle.sockets, protocol.sync_update(diff))
                self._solved.schedule(handle)
        finally:
            handle.catching_up = False
