"""Ending rooms fleet-wide: the mentor's grace, the session's end, its archive.

When a room's mentor leaves, the room waits ``MENTOR_GRACE_SECONDS`` (a deadline in the
``closing`` sorted set, swept by housekeeping); an empty room without a mentor ends at
once. Ending is one script in Redis, so exactly one gateway ends a session and archives
it; its channel message sends every gateway's members home (``RoomRegistry.dismiss``).
"""

from __future__ import annotations

from redis.asyncio import Redis

from services.gateway.archive import Archiver
from services.gateway.chat import ChatRelay
from services.gateway.metrics import GatewayMetrics
from services.gateway.store import Closed, RoomStore, now_ms
from shared.keys import Keys


class RoomCloser:
    def __init__(
        self,
        redis: Redis,
        keys: Keys,
        store: RoomStore,
        archiver: Archiver,
        chat: ChatRelay,
        metrics: GatewayMetrics,
        grace_seconds: float,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._archiver = archiver
        self._chat = chat
        self._metrics = metrics
        self._grace_ms = int(grace_seconds * 1000)

    async def start_grace(
        self, block_id: str, *, since: int | None = None, keep_earlier: bool = False
    ) -> None:
        """The mentor is away (since ``since`` ms, else from now): end the room when the
        grace is over, unless they are back. ``keep_earlier`` keeps a deadline already
        set (a resync, or a joiner, finding them away: the set's node may have lost it)."""
        deadline = (now_ms() if since is None else since) + self._grace_ms
        await self._redis.zadd(self._keys.closing, {block_id: deadline}, nx=keep_earlier)

    @property
    def grace_ms(self) -> int:
        return self._grace_ms

    async def after_leave(self, block_id: str, mentor_away: bool, empty: bool) -> None:
        """What members leaving (a socket, or a dead gateway's) mean for the room."""
        if mentor_away:
            await self.start_grace(block_id)
        elif empty:
            await self.end(block_id, session="", force=True, reason="empty")

    async def end(self, block_id: str, *, session: str, force: bool, reason: str) -> str:
        """End the session fleet-wide if its mentor's grace is over (or now, with force)
        and archive it: "closed", or why not ("wait", "stale", "none")."""
        result = await self._store.end_session(
            block_id,
            session=session,
            now_ms=now_ms(),
            grace_ms=self._grace_ms,
            reason=reason,
            force=force,
        )
        if not isinstance(result, Closed):
            status, deadline = result
            if status == "wait":
                await self._redis.zadd(self._keys.closing, {block_id: deadline})
            return status
        await self._redis.srem(self._keys.rooms, block_id)
        self._metrics.rooms_closed.inc()
        if result.mentor:
            chat = await self._chat.archive(block_id, result.session)
            self._archiver.archive(block_id, result, reason, chat)
        return "closed"
