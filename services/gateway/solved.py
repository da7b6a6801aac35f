"""The solved check: once per event-loop tick per room, after the tick's updates.

A room's text is compared with the solution by the room core (``RoomCore.solved_check``);
what it reports goes to the room's fleet-wide flag in Redis, whose script announces
``solved`` on the channel once per match.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from services.gateway.background import Background
from services.gateway.registry import RoomHandle
from services.gateway.room import RoomCore
from services.gateway.store import RoomStore

log = logging.getLogger(__name__)


class SolvedChecks:
    def __init__(self, store: RoomStore, background: Background) -> None:
        self._store = store
        self._background = background
        self._dirty: set[RoomHandle] = set()
        self._pending = False

    def schedule(self, handle: RoomHandle) -> None:
        """Check the room's text once this tick's updates are applied (one check per tick)."""
        self._dirty.add(handle)
        if not self._pending:
            self._pending = True
            asyncio.get_running_loop().call_soon(self._check)

    def _check(self) -> None:
        self._pending = False
        dirty, self._dirty = self._dirty, set()
        for handle in dirty:
            core = handle.live
            if core is None:
                continue
            match = core.solved_check()
            if match is not None:
                self._background.spawn(self._report(core, match))

    async def _report(self, core: RoomCore, match: bool) -> None:
        try:
            await self._store.mark_solved(core.block_id, core.session, core.applied_seq, match)
        except RedisError as exc:
            log.warning("solved check of %s failed: %s", core.block_id, exc)
