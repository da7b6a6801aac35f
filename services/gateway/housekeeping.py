"""Fleet housekeeping: heartbeats, reaping dead gateways, closing rooms after the grace.

The heartbeat is its own loop (``ZADD gateways <now> <id>`` each
``HEARTBEAT_INTERVAL_SECONDS``): it says the process is alive and serving its sockets,
so no slow housekeeping step (a repair that waits out a restarted primary's
``CLUSTERDOWN``, a reap of many rooms) can make the others reap a gateway that is alive.
If the heartbeat finds its entry gone (the others reaped it anyway: a stall longer than
``GATEWAY_DEAD_AFTER_SECONDS``, a partition; or the node holding the set restarted
empty), the next tick checks one member of every served room (``HEXISTS``, 64 rooms a
pipeline) and resyncs the rooms whose members are gone: they are registered again and a
mentor's grace started by the reap is cancelled. (A set merely lost with its node finds
every member there, and resyncs nothing.)

The housekeeping loop runs each ``HEARTBEAT_INTERVAL_SECONDS`` too:
1. (the heartbeat loop above);
2. notice a Redis primary that restarted empty (its run id changed; every primary on a
   cluster) and write back what it held: the rooms of its slots, and the fleet-wide
   sets if they lived there (``runids.py``; docs/cluster.md);
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

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.closing import RoomCloser
from services.gateway.metrics import GatewayMetrics
from services.gateway.resync import Resync
from services.gateway.runids import RunIds, plan, remembered, restarted
from services.gateway.store import RoomStore, now_ms
from shared.keys import Keys
from shared.redisconn import as_text, key_owner, primary_run_ids

log = logging.getLogger(__name__)

# The periodic "is the room log ahead of us?" check costs two commands per served room;
# gaps are normally seen at once on the channel, so it is only a safety net.
CHECK_ROOMS_EVERY = 3


class Housekeeper:
    def __init__(
        self,
        gateway_id: str,
        redis: Redis,
        keys: Keys,
        store: RoomStore,
        resync: Resync,
        closer: RoomCloser,
        metrics: GatewayMetrics,
        *,
        interval: float,
        dead_after: float,
    ) -> None:
        self.id = gateway_id
        self.redis = redis
        self.keys = keys
        self._store = store
        self._resync = resync
        self._closer = closer
        self._metrics = metrics
        self._interval = interval
        self._dead_after_ms = int(dead_after * 1000)
        self._run_ids: RunIds | None = None  # each primary's run id, by address
        self._owner = key_owner(redis)
        # Since when this gateway's own heartbeats have gone through without a break:
        # while Redis (or the shard holding the heartbeats, during a cluster failover) was
        # unreachable, nobody could heartbeat, so no one is reaped until every gateway
        # had ``dead_after`` to heartbeat again.
        self._healthy_since: float | None = None
        self._beats = 0  # heartbeats that went through
        self._check_members = False  # the heartbeat's entry was gone: were we reaped?
        self._ticks = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.redis_ok = False

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
            asyncio.create_task(self._loop(), name="housekeeping"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.zrem(self.keys.gateways, self.id)
                pipe.delete(self.keys.gateway_rooms(self.id))
                await pipe.execute()
        except RedisError as exc:
            log.warning("could not deregister: %s", exc)

    async def _heartbeat_loop(self) -> None:
        interval = self._interval
        while True:
            started = time.monotonic()
            try:
                await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError):
                self._healthy_since = None  # the housekeeping loop says Redis is down
            except Exception:
                log.exception("heartbeat failed")
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def heartbeat(self) -> None:
        """``ZADD``; an entry that was not there any more (after the first beat) means the
        others reaped this gateway, or lost the set: the next tick checks the members."""
        added = await self.redis.zadd(self.keys.gateways, {self.id: now_ms()})
        if self._healthy_since is None:
            self._healthy_since = time.monotonic()
        if added and self._beats:
            log.warning(
                "this gateway's heartbeat was gone from the fleet (reaped while alive, or "
                "redis lost it): checking its rooms' members"
            )
            self._check_members = True
        self._beats += 1

    async def _loop(self) -> None:
        interval = self._interval
        said_down = False  # one line per outage, the first one included (even at start)
        while True:
            started = time.monotonic()
            try:
                await self.tick()
                if said_down:
                    log.warning("housekeeping: redis available again")
                self.redis_ok, said_down = True, False
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if not said_down:
                    log.error("housekeeping: redis unavailable: %s", exc)
                    said_down = True
                self.redis_ok = False
                self._healthy_since = None
            except Exception:
                log.exception("housekeeping failed")
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def tick(self) -> None:
        await self.notice_restarts()
        if self._check_members:
            marked = await self._resync.mark_unregistered()
            self._check_members = False
            if marked:
                log.warning("members gone from %d rooms: resyncing them", marked)
        await self._resync.resync_pending()
        self._ticks += 1
        if self._ticks % CHECK_ROOMS_EVERY == 0:
            await self._resync.check_rooms()
        healthy_since = self._healthy_since
        if healthy_since is not None and (
            time.monotonic() - healthy_since >= self._dead_after_ms / 1000
        ):
            await self.reap()
        await self.sweep()

    async def notice_restarts(self) -> None:
        """Write back what a primary that restarted empty held. The run ids are kept only
        once that went through: a failure midway is seen, and repaired, again."""
        run_ids = await primary_run_ids(self.redis)
        nodes = restarted(self._run_ids, run_ids)
        if nodes:
            served = self._resync.served()
            repair = plan(nodes, self._owner, self.keys, self.id, served)
            log.warning(
                "redis %s restarted empty (run id changed): resyncing %d of %d rooms; "
                "%d re-registered, %d graces checked",
                ",".join(sorted(a or "server" for a in nodes)),
                len(repair.resync),
                len(served),
                len(repair.register),
                len(repair.rearm),
            )
            await self._resync.resync_rooms(set(repair.resync))
            await self._resync.register(repair.register)
            rearm = set(repair.rearm)
            if repair.fleet_graces:  # after register: P:rooms may have been lost too
                fleet = {as_text(b) for b in await self.redis.smembers(self.keys.rooms)}
                rearm |= fleet - repair.resync
            await self._resync.rearm_graces(rearm)
        self._run_ids = remembered(self._run_ids, run_ids)

    async def reap(self) -> None:
        dead_before = now_ms() - self._dead_after_ms
        dead = await self.redis.zrangebyscore(self.keys.gateways, "-inf", dead_before)
        for raw in dead:
            gateway = as_text(raw)
            if gateway == self.id:
                continue
            lock = await self.redis.set(self.keys.reap_lock(gateway), self.id, nx=True, px=10000)
            if not lock:
                continue
            rooms = await self.redis.smembers(self.keys.gateway_rooms(gateway))
            log.warning("reaping gateway %s (%d rooms)", gateway, len(rooms))
            for room in rooms:
                block_id = as_text(room)
                _, mentor_away, empty = await self._store.leave(
                    block_id, gateway + "/", now_ms(), prefix=True
                )
                await self._closer.after_leave(block_id, mentor_away, empty)
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.delete(self.keys.gateway_rooms(gateway))
                pipe.zrem(self.keys.gateways, gateway)
                await pipe.execute()
            self._metrics.reaped.inc()

    async def sweep(self) -> None:
        due = cast(
            list[tuple[bytes, float]],
            await self.redis.zrangebyscore(
                self.keys.closing, "-inf", now_ms(), start=0, num=50, withscores=True
            ),
        )
        for raw, score in due:
            block_id = as_text(raw)
            status = await self._closer.end(block_id, session="", force=False, reason="mentor-left")
            if status in ("stale", "none", "closed"):
                await self._store.forget_closing(block_id, int(score))
