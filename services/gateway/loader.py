"""Loading a room into this gateway: once per room, for the session a socket joined.

The first socket of a room lists it (so its channel is followed before its state is
read: nothing published in between is missed), reads its state and log from Redis and
builds its core; sockets arriving meanwhile wait for that one load. A socket that joined
a session which has closed since gets ``RoomGone``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.gateway.blocks import Block
from services.gateway.registry import RoomHandle, RoomRegistry
from services.gateway.room import Limits, RoomCore
from services.gateway.store import RoomStore


class RoomGone(Exception):
    """The session a socket joined closed before the socket got into the room."""


class RoomLoader:
    def __init__(
        self,
        registry: RoomRegistry,
        store: RoomStore,
        limits: Limits,
        on_loaded: Callable[[RoomHandle], None],
    ) -> None:
        self._registry = registry
        self._store = store
        self._limits = limits
        self._on_loaded = on_loaded
        self._opening: dict[str, asyncio.Future[RoomHandle]] = {}

    async def room(self, block_id: str, block: Block, session: str) -> RoomHandle:
        """The loaded room for the session this socket joined, loading it (once) if needed.

        Raises RoomGone when that session closed before the socket got in."""
        while True:
            handle = self._registry.get(block_id)
            if handle is None or handle.closed:
                pending = self._opening.get(block_id)
                if pending is not None:
                    await asyncio.shield(pending)
                    continue
                handle = await self._open(block_id, block)
            else:
                await handle.loaded.wait()
                if handle.closed or handle.core is None:
                    continue  # closed (or failed) while we waited: look again
            assert handle.core is not None
            if handle.core.session == session:
                return handle
            if await self._store.current_session(block_id) != session:
                raise RoomGone(block_id)
            # The room held here belongs to an older session, which has closed.
            self._registry.dismiss(block_id, handle, "mentor-left")

    async def _open(self, block_id: str, block: Block) -> RoomHandle:
        future: asyncio.Future[RoomHandle] = asyncio.get_running_loop().create_future()
        self._opening[block_id] = future
        try:
            handle = await self._load(block_id, block)
            future.set_result(handle)
            return handle
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved
            raise
        finally:
            del self._opening[block_id]

    async def _load(self, block_id: str, block: Block) -> RoomHandle:
        handle = RoomHandle(block=block)
        self._registry.add(block_id, handle)
        try:
            loaded = await self._store.load(block_id)
            if isinstance(loaded, str):
                raise RoomGone(block_id)
        except BaseException:
            self._registry.remove(block_id, handle)
            handle.loaded.set()
            raise
        core = RoomCore(block_id, loaded.session, loaded.epoch, block.solution, self._limits)
        core.load(loaded.snapshot, loaded.entries, loaded.seq)
        core.doc_bytes = loaded.doc_bytes
        core.presence = loaded.presence
        core.solved = loaded.solved
        handle.core = core
        self._on_loaded(handle)
        handle.loaded.set()
        return handle
