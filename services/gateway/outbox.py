"""Everything a gateway writes to Redis on the hot path, coalesced: one pipeline per tick.

Students' updates are queued per room; awareness per channel. A single writer task sends
whatever accumulated as one pipeline (one round trip, one syscall) and, while it is in
flight, the next batch accumulates. A room's updates go out in order, at most
``MAX_BATCH`` merged per log entry (pycrdt's memory to apply an update grows with the
square of its consecutive items, and ``merge_updates`` does not squash keystrokes).

When Redis refuses a room's batch because it lost the room (restart) or is unreachable,
the batch is kept and the room is *held* until the hub has resynced it (``release``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from pycrdt import merge_updates
from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from services.gateway.scripts import PUBLISH, RoomStore

log = logging.getLogger(__name__)

MAX_BATCH = 64

Published = Callable[[str, str, int, int, int], None]  # block, session, seq, bytes, since
Lost = Callable[[str, str, bool], None]  # block, session, closed (else: resync needed)


@dataclass(slots=True)
class _Queue:
    session: str
    updates: list[bytes] = field(default_factory=list)
    held: bool = False


class Outbox:
    def __init__(
        self,
        redis: Redis,
        store: RoomStore,
        gateway_id: str,
        on_published: Published,
        on_lost: Lost,
    ) -> None:
        self._redis = redis
        self._store = store
        self._gateway = gateway_id
        self._on_published = on_published
        self._on_lost = on_lost
        self._rooms: dict[str, _Queue] = {}
        self._awareness: list[tuple[str, bytes]] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # --- producers (synchronous, called from the hot path) -------------------------------
    def update(self, block_id: str, session: str, update: bytes) -> None:
        queue = self._rooms.get(block_id)
        if queue is None or queue.session != session:
            queue = self._rooms[block_id] = _Queue(session)
        queue.updates.append(update)
        self._kick()

    def awareness(self, channel: str, data: bytes) -> None:
        self._awareness.append((channel, data))
        self._kick()

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    # --- room control --------------------------------------------------------------------
    def release(self, block_id: str) -> None:
        """The hub resynced the room: send what was held."""
        queue = self._rooms.get(block_id)
        if queue is not None and queue.held:
            queue.held = False
            self._kick()

    def forget(self, block_id: str) -> None:
        self._rooms.pop(block_id, None)

    def pending(self, block_id: str) -> bool:
        queue = self._rooms.get(block_id)
        return queue is not None and bool(queue.updates)

    async def drained(self, grace: float) -> bool:
        """Wait up to ``grace`` seconds until nothing sendable is queued (at shutdown)."""
        try:
            async with asyncio.timeout(grace):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    # --- the writer -------------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox send failed")
                await asyncio.sleep(0.1)
            if not self._wake.is_set():
                self._idle.set()

    async def _send(self) -> None:
        batches: list[tuple[str, _Queue, list[bytes], bytes]] = []
        for block_id, queue in list(self._rooms.items()):
            if queue.held or not queue.updates:
                continue
            batch = queue.updates[:MAX_BATCH]
            del queue.updates[:MAX_BATCH]
            if queue.updates:
                self._wake.set()  # more of this room in the next round
            merged = batch[0] if len(batch) == 1 else merge_updates(*batch)
            batches.append((block_id, queue, batch, merged))
        awareness, self._awareness = self._awareness, []
        if not batches and not awareness:
            return
        sha = self._store.publish_sha
        async with self._redis.pipeline(transaction=False) as pipe:
            for block_id, queue, _, merged in batches:
                keys = self._store.room_keys(block_id).as_list()
                pipe.execute_command(
                    "EVALSHA", sha, len(keys), *keys, queue.session, self._gateway, merged
                )
            for channel, data in awareness:
                pipe.publish(channel, data)
            try:
                results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:
                results = [exc] * (len(batches) + len(awareness))
        reload_script = False
        for (block_id, queue, batch, _), result in zip(batches, results, strict=False):
            if isinstance(result, NoScriptError):
                reload_script = True
                queue.updates[:0] = batch
                continue
            if isinstance(result, BaseException):
                log.warning("publish to room %s failed: %s", block_id, result)
                seq = -2
            else:
                seq, doc_bytes, since = (int(x) for x in result)
            if seq == -2:  # Redis lost the room or is unreachable: hold until resynced
                queue.updates[:0] = batch
                queue.held = True
                self._on_lost(block_id, queue.session, False)
            elif seq == -1:  # the session is over (the close event is on its way)
                self._rooms.pop(block_id, None)
                self._on_lost(block_id, queue.session, True)
            else:
                self._on_published(block_id, queue.session, seq, doc_bytes, since)
            if not queue.updates and not queue.held and self._rooms.get(block_id) is queue:
                del self._rooms[block_id]
        if reload_script:
            await self._redis.script_load(PUBLISH)
            self._wake.set()
