"""What the outbox reports back about a room's publishes, and log compaction.

Every published batch tells the room its document's size and how many log entries sit
beyond the snapshot; past ``LOG_COMPACT_ENTRIES`` the room writes a new snapshot (after
reading the log, so the snapshot covers as much as possible) and the log is trimmed.
A batch Redis refused because it lost the room is held until the room is resynced.
"""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from services.gateway.background import Background
from services.gateway.catchup import CatchUp
from services.gateway.metrics import GatewayMetrics
from services.gateway.registry import RoomHandle, RoomRegistry
from services.gateway.store import RoomStore

log = logging.getLogger(__name__)


class Compactor:
    def __init__(
        self,
        registry: RoomRegistry,
        store: RoomStore,
        catch_up: CatchUp,
        compact_after: int,
        metrics: GatewayMetrics,
        background: Background,
    ) -> None:
        self._registry = registry
        self._store = store
        self._catch_up = catch_up
        self._compact_after = compact_after
        self._metrics = metrics
        self._background = background

    def _handle(self, block_id: str, session: str) -> RoomHandle | None:
        handle = self._registry.get(block_id)
        if handle is None or handle.core is None or handle.core.session != session:
            return None
        return handle

    def on_published(
        self, block_id: str, session: str, seq: int, doc_bytes: int, since: int
    ) -> None:
        self._metrics.publishes += 1
        handle = self._handle(block_id, session)
        if handle is None or handle.core is None:
            return
        handle.core.doc_bytes = doc_bytes
        if since > self._compact_after and not handle.compacting:
            handle.compacting = True
            self._background.spawn(self._compact(handle))

    def on_publish_lost(self, block_id: str, session: str, closed: bool) -> bool:
        """Whether the outbox should hold the room's batch: yes while the room is served
        here and not closed (housekeeping resyncs it, then releases the batch)."""
        handle = self._handle(block_id, session)
        if closed:
            return False
        if handle is None:
            log.warning("updates for room %s could not be published (room gone)", block_id)
            return False
        handle.needs_resync = True
        return True

    async def _compact(self, handle: RoomHandle) -> None:
        core = handle.core
        try:
            if core is None or handle.closed:
                return
            await self._catch_up.run(handle)
            await self._store.compact(
                core.block_id, core.session, core.applied_seq, core.full_update()
            )
        except RedisError as exc:
            log.warning("compaction of %s failed: %s", handle.block.id, exc)
        finally:
            handle.compacting = False
