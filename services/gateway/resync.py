"""Putting this gateway's rooms back into Redis, and noticing when they drifted.

After a lost pub/sub connection or a Redis primary that lost its data, the rooms it held
re-register their members and republish what only this gateway holds (``resync_rooms``),
and the fleet-wide sets it held are written again (``register``, ``rearm_graces``); a room that
noticed a loss on its own waits for housekeeping (``resync_pending``). The periodic
``check_rooms`` reads each room's head to catch a lost last message, the only loss the
sequence numbers on the channel cannot reveal.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from itertools import batched

from pycrdt import Doc, Text
from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.gateway.background import Background
from services.gateway.catchup import CatchUp
from services.gateway.closing import RoomCloser
from services.gateway.delivery import Delivery
from services.gateway.inbound import Head, Sent, head_verdict
from services.gateway.metrics import GatewayMetrics
from services.gateway.outbox import Outbox
from services.gateway.registry import RoomHandle, RoomRegistry
from services.gateway.room import RoomCore
from services.gateway.solved import SolvedChecks
from services.gateway.store import RoomStore, now_ms
from services.gateway.ydoc import EMPTY_UPDATE, replay
from shared import protocol
from shared.keys import Keys

log = logging.getLogger(__name__)

_LETTER = {"mentor": "m", "student": "s", "watcher": "w"}
CHECK_CHUNK = 64  # rooms per pipeline of the periodic check (two commands each)


class Resync:
    def __init__(
        self,
        gateway_id: str,
        redis: Redis,
        keys: Keys,
        store: RoomStore,
        registry: RoomRegistry,
        delivery: Delivery,
        outbox: Outbox,
        catch_up: CatchUp,
        solved: SolvedChecks,
        closer: RoomCloser,
        metrics: GatewayMetrics,
        background: Background,
    ) -> None:
        self._id = gateway_id
        self._redis = redis
        self._keys = keys
        self._store = store
        self._registry = registry
        self._delivery = delivery
        self._outbox = outbox
        self._catch_up = catch_up
        self._solved = solved
        self._closer = closer
        self._metrics = metrics
        self._background = background

    def served(self) -> list[str]:
        """The rooms open here."""
        return [block_id for block_id, _, _ in self._registry.live()]

    async def register(self, block_ids: Iterable[str]) -> None:
        """Add rooms again to the lobby's set and this gateway's (a primary holding them
        restarted empty): one ``SADD`` to each, whatever the number of rooms."""
        rooms = sorted(block_ids)
        if rooms:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.sadd(self._keys.rooms, *rooms)
                pipe.sadd(self._keys.gateway_rooms(self._id), *rooms)
                await pipe.execute()

    async def rearm_graces(self, block_ids: Iterable[str]) -> None:
        """Set again the grace of the rooms whose mentor is away (the closing set's primary
        restarted empty): their state says since when; ``CHECK_CHUNK`` rooms per pipeline.
        A deadline still there is kept (``ZADD NX``)."""
        for chunk in batched(sorted(block_ids), CHECK_CHUNK, strict=False):
            async with self._redis.pipeline(transaction=False) as pipe:
                for block_id in chunk:
                    pipe.hget(self._keys.room(block_id).state, "mentor_left_at")
                away = await pipe.execute()
            for block_id, left_at in zip(chunk, away, strict=True):
                if left_at is not None:
                    await self._closer.start_grace(block_id, since=int(left_at), keep_earlier=True)

    async def resync_rooms(
        self, block_ids: set[str] | None, suspect: frozenset[str] = frozenset()
    ) -> None:
        """The same for the rooms whose subscription was interrupted (None: every room);
        ``suspect``: rooms whose primary failed over (their state may have lost writes)."""
        for block_id, handle, core in self._registry.live():
            if handle.closed or (block_ids is not None and block_id not in block_ids):
                continue
            try:
                await self._resync(block_id, handle, core, block_id in suspect)
            except RedisError as exc:
                handle.needs_resync = True  # housekeeping tries again
                log.warning("resync of %s failed: %s", block_id, exc)

    async def mark_unregistered(self) -> int:
        """Mark for a resync (``resync_pending``) the served rooms whose members are not
        registered in Redis any more (another gateway reaped this one while it was
        alive): one ``HEXISTS`` of one member per room, ``CHECK_CHUNK`` rooms per
        pipeline. Returns how many were marked."""
        rooms = [
            (handle, block_id, next(iter(core.members)))
            for block_id, handle, core in self._registry.live()
            if core.members and not handle.closed
        ]
        marked = 0
        for chunk in batched(rooms, CHECK_CHUNK, strict=False):
            async with self._redis.pipeline(transaction=False) as pipe:
                for _, block_id, member_id in chunk:
                    pipe.hexists(self._keys.room(block_id).members, member_id)
                present = await pipe.execute()
            for (handle, _, _), there in zip(chunk, present, strict=True):
                if not there:
                    handle.needs_resync = True
                    marked += 1
        return marked

    async def resync_pending(self) -> None:
        """Housekeeping: resync rooms that noticed Redis lost something of theirs. A
        failure keeps the room's mark (and stops here: the next tick tries again)."""
        for block_id, handle, core in self._registry.live():
            if handle.needs_resync and not handle.closed:
                try:
                    await self._resync(block_id, handle, core)
                except RedisError:
                    handle.needs_resync = True
                    raise

    async def _resync(
        self, block_id: str, handle: RoomHandle, core: RoomCore, suspect: bool = False
    ) -> None:
        self._metrics.resyncs.inc()
        handle.needs_resync = False
        members = [(m.id, _LETTER[m.role], m.client_id) for m in core.members.values()]
        status, epoch, mentor_away = await self._store.resync(
            block_id,
            session=core.session,
            now_ms=now_ms(),
            new_epoch=secrets.token_hex(8),
            snapshot=core.full_update(),
            members=members,
            epoch=core.epoch,
            applied_seq=core.applied_seq,
            suspect=suspect,
        )
        if status == "closed":
            self._registry.dismiss(block_id, handle, "mentor-left")
            return
        await self._store.register(block_id, self._id)
        if epoch != core.epoch:
            # Redis lost the room (restart): count from its new log, take what the
            # first re-seeder wrote, and give it whatever only this gateway holds.
            core.epoch = epoch
            core.applied_seq = 0
            loaded = await self._store.load(block_id)
            if isinstance(loaded, str):
                return
            remote: Doc[Text] = Doc()
            replay(remote, loaded.snapshot, loaded.entries)
            missing = core.doc.get_update(remote.get_state())
            before = core.doc.get_state()
            core.load(loaded.snapshot, loaded.entries, loaded.seq)
            core.doc_bytes = loaded.doc_bytes
            news = core.doc.get_update(before)
            if news != EMPTY_UPDATE:
                self._delivery.fanout(handle.sockets, protocol.sync_update(news))
            if missing != EMPTY_UPDATE:
                self._outbox.update(block_id, core.session, missing)
        self._outbox.release(block_id)
        await self._catch_up.run(handle)
        if mentor_away:
            await self._closer.start_grace(block_id, keep_earlier=True)

    async def check_rooms(self) -> None:
        """Periodic: catch up any room whose log is ahead of what was applied here.

        ``CHECK_CHUNK`` rooms per pipeline, the loop free between chunks: one pipeline
        for every served room built and read in one callback stalled the gateway (and
        the keystrokes in flight) in proportion to its rooms (docs/bench/tail.md)."""
        for chunk in batched(self._registry.live(), CHECK_CHUNK, strict=False):
            await self._check_chunk(chunk)

    async def _check_chunk(self, rooms: tuple[tuple[str, RoomHandle, RoomCore], ...]) -> None:
        sent = [Sent(core.session, core.epoch, core.applied_seq) for _, _, core in rooms]
        async with self._redis.pipeline(transaction=False) as pipe:
            for block_id, _, _ in rooms:
                keys = self._keys.room(block_id)
                pipe.hmget(keys.state, "session", "seq", "epoch")
                pipe.get(keys.tomb)
            results = await pipe.execute()
        for i, (block_id, handle, core) in enumerate(rooms):
            if handle.needs_resync or handle.closed:
                continue
            (session, seq, epoch), tomb = results[2 * i], results[2 * i + 1]
            head = Head(_text(session), int(seq or 0), _text(epoch), _text(tomb))
            verdict = head_verdict(sent[i], head, core.epoch, core.applied_seq)
            if verdict == "dismiss":
                self._registry.dismiss(block_id, handle, "mentor-left")
            elif verdict == "resync":
                handle.needs_resync = True  # Redis lost the room, or writes of it
            elif verdict == "catch_up":
                self._background.spawn(self._catch_up.run(handle))
            elif verdict == "ok":
                # Updates from other gateways are checked by their publisher; should it
                # have gone before its update came back, the text is checked here.
                self._solved.schedule(handle)


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode()
