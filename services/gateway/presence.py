"""Fleet housekeeping: heartbeats, reaping dead gateways, closing rooms after the grace.

Every gateway runs this loop each ``HEARTBEAT_INTERVAL_SECONDS``:
1. heartbeat: ``ZADD gateways <now> <id>``;
2. notice a Redis that lost its data (its run id changed) and resync every room;
3. every third tick, catch up rooms whose log is ahead of what this gateway applied (a
   lost last message: the only loss the sequence numbers on the channel cannot reveal);
4. reap gateways silent for ``GATEWAY_DEAD_AFTER_SECONDS``: remove their members from
   every room they served (counts corrected, a mentor's grace started);
5. close rooms whose mentor's grace is over (atomic in Redis: exactly one gateway wins).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

from redis.exceptions import RedisError

from services.gateway.hub import Hub
from services.gateway.scripts import now_ms

log = logging.getLogger(__name__)

# The periodic "is the room log ahead of us?" check costs two commands per served room;
# gaps are normally seen at once on the channel, so it is only a safety net.
CHECK_ROOMS_EVERY = 3


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Housekeeper:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.settings = hub.settings
        self.redis = hub.redis
        self.keys = hub.keys
        self._run_id: str | None = None
        self._ticks = 0
        self._task: asyncio.Task[None] | None = None
        self.redis_ok = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="housekeeping")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keys.gateways, self.hub.id)
                pipe.delete(self.keys.gateway_rooms(self.hub.id))
                await pipe.execute()
        except RedisError as exc:
            log.warning("could not deregister: %s", exc)

    async def _loop(self) -> None:
        interval = self.settings.heartbeat_interval_seconds
        while True:
            started = time.monotonic()
            try:
                await self.tick()
                self.redis_ok = True
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if self.redis_ok:
                    log.error("housekeeping: redis unavailable: %s", exc)
                self.redis_ok = False
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def tick(self) -> None:
        hub = self.hub
        await self.redis.zadd(self.keys.gateways, {hub.id: now_ms()})
        info = await self.redis.info("server")
        run_id = str(info.get("run_id", ""))
        if self._run_id is not None and run_id != self._run_id:
            log.warning("redis restarted (run id changed): resyncing rooms")
            await hub.sync.resync_all()
        self._run_id = run_id
        await hub.sync.resync_pending()
        self._ticks += 1
        if self._ticks % CHECK_ROOMS_EVERY == 0:
            await hub.sync.check_rooms()
        await self.reap()
        await self.sweep()

    async def reap(self) -> None:
        dead_before = now_ms() - int(self.settings.gateway_dead_after_seconds * 1000)
        dead = await self.redis.zrangebyscore(self.keys.gateways, "-inf", dead_before)
        for raw in dead:
            gateway = _text(raw)
            if gateway == self.hub.id:
                continue
            lock = await self.redis.set(
                self.keys.reap_lock(gateway), self.hub.id, nx=True, px=10000
            )
            if not lock:
                continue
            rooms = await self.redis.smembers(self.keys.gateway_rooms(gateway))
            log.warning("reaping gateway %s (%d rooms)", gateway, len(rooms))
            for room in rooms:
                block_id = _text(room)
                _, mentor_away, empty = await self.hub.store.leave(
                    block_id, gateway + "/", now_ms(), prefix=True
                )
                await self.hub.after_leave(block_id, mentor_away, empty)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.gateway_rooms(gateway))
                pipe.zrem(self.keys.gateways, gateway)
                await pipe.execute()
            self.hub.metrics.reaped.inc()

    async def sweep(self) -> None:
        due = cast(
            list[tuple[bytes, float]],
            await self.redis.zrangebyscore(
                self.keys.closing, "-inf", now_ms(), start=0, num=50, withscores=True
            ),
        )
        for raw, score in due:
            block_id = _text(raw)
            status = await self.hub.close_room(
                block_id, session="", force=False, reason="mentor-left"
            )
            if status in ("stale", "none", "closed"):
                await self.hub.store.forget_closing(block_id, int(score))
