"""Keeping each room's copy on this gateway in step with Redis.

What arrives on a room's channel is applied here (updates, awareness, presence, solved,
close); a sequence gap, another epoch or a periodic check that finds the room ahead
makes the room read its log (``catch_up``); after a lost pub/sub connection or a Redis
that lost its data, every room is re-registered (``resync``). The solved check runs
once per tick per room after the tick's updates.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import TYPE_CHECKING

from pycrdt import Doc, Text
from redis.exceptions import RedisError

from services.gateway.room import EMPTY_UPDATE, RoomCore
from services.gateway.runs import channel_frame
from services.gateway.scripts import Presence, now_ms
from services.gateway.wire import presence_frame
from shared import protocol

if TYPE_CHECKING:
    from services.gateway.hub import Hub, RoomHandle

log = logging.getLogger(__name__)

_LETTER = {"mentor": "m", "student": "s", "watcher": "w"}


class RoomSync:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._solved_dirty: set[RoomHandle] = set()
        self._solved_pending = False

    # --- the room channel ---------------------------------------------------------------
    def on_channel_message(self, channel_or_block: str, data: bytes) -> None:
        block_id = self.hub.keys.room_from_channel(channel_or_block) or channel_or_block
        handle = self.hub.rooms.get(block_id)
        kind = data[:1]
        self.hub.metrics.redis_messages[kind] += 1
        if handle is None or handle.closed:
            return
        core = handle.core
        if core is None:
            handle.early.append(data)
            return
        if kind == b"U":
            origin, epoch, seq_text, update = data[1:].split(b"\x00", 3)
            if epoch.decode() != core.epoch:
                # Redis lost the room and someone re-seeded it: apply, then resync.
                if origin != self.hub.id_bytes:
                    self.hub.fanout(handle, core.apply_foreign_update(update))
                    self.schedule_solved(handle)
                handle.needs_resync = True
                return
            before = core.applied_seq
            own = origin == self.hub.id_bytes
            frame, gap = core.apply_remote_update(int(seq_text), update, own)
            if frame is not None:
                self.hub.fanout(handle, frame)
            if own and core.applied_seq != before:
                # The gateway that published an update checks the text once the update
                # is back in sequence: by then it holds every update up to it, so the
                # last update of a room is always checked, and once, fleet-wide.
                self.schedule_solved(handle)
            if gap and not handle.catching_up:
                self.hub.spawn(self.catch_up(handle))
        elif kind == b"A":
            origin, owner, update = data[1:].split(b"\x00", 2)
            if origin != self.hub.id_bytes:
                frame = core.apply_remote_awareness(update, owner.decode())
                if frame is not None:
                    self.hub.fanout(handle, frame)
        elif kind == b"Q":
            # Another gateway started serving the room: tell it who is here.
            if data[1:] != self.hub.id_bytes:
                channel = self.hub.keys.room(block_id).channel
                for holder, mine in core.local_awareness():
                    tagged = self.hub.awareness_tag + holder.encode() + b"\x00" + mine
                    self.hub.outbox.awareness(channel, tagged)
        elif kind == b"P":
            version, mentor, students, watchers = data[1:].split(b"\x00")
            counts = Presence(int(version), mentor == b"1", int(students), int(watchers))
            if handle.presence is None or counts.version > handle.presence.version:
                handle.presence = counts
                self.hub.fanout(handle, presence_frame(counts))
        elif kind == b"R" or kind == b"M":  # a run (runs.py); chat, hints (chat.py)
            self.hub.fanout(handle, channel_frame(data))
        elif kind == b"S":
            core.solved = True
            self.hub.fanout(handle, protocol.SOLVED)
        elif kind == b"C":
            session, reason = data[1:].split(b"\x00", 1)
            if session.decode() == core.session:
                self.hub.close_local(block_id, handle, reason.decode())

    async def catch_up(self, handle: RoomHandle) -> None:
        """Read what the room log has beyond what this gateway applied."""
        core = handle.core
        if core is None or handle.catching_up:
            return
        handle.catching_up = True
        try:
            self.hub.metrics.catchups.inc()
            loaded = await self.hub.store.load(core.block_id, core.applied_seq)
            if isinstance(loaded, str) or loaded.session != core.session:
                if loaded == "":
                    handle.needs_resync = True  # Redis lost the room: not a close
                else:
                    self.hub.close_local(core.block_id, handle, "mentor-left")
                return
            if loaded.epoch != core.epoch:
                handle.needs_resync = True
                return
            before = core.doc.get_state()
            core.load(loaded.snapshot, loaded.entries, loaded.seq)
            diff = core.doc.get_update(before)
            if diff != EMPTY_UPDATE:
                self.hub.fanout(handle, protocol.sync_update(diff))
                self.schedule_solved(handle)
        finally:
            handle.catching_up = False

    # --- solved ---------------------------------------------------------------------------
    def schedule_solved(self, handle: RoomHandle) -> None:
        """Check the room's text once this tick's updates are applied (one check per tick)."""
        self._solved_dirty.add(handle)
        if not self._solved_pending:
            self._solved_pending = True
            asyncio.get_running_loop().call_soon(self._check_solved)

    def _check_solved(self) -> None:
        self._solved_pending = False
        dirty, self._solved_dirty = self._solved_dirty, set()
        for handle in dirty:
            core = handle.core
            if core is None or handle.closed:
                continue
            match = core.solved_check()
            if match is not None:
                self.hub.spawn(self._report_solved(core, match))

    async def _report_solved(self, core: RoomCore, match: bool) -> None:
        try:
            await self.hub.store.mark_solved(core.block_id, core.session, core.applied_seq, match)
        except RedisError as exc:
            log.warning("solved check of %s failed: %s", core.block_id, exc)

    async def resync_all(self) -> None:
        """After the pub/sub connection came back: re-register and catch up every room."""
        for block_id, handle in list(self.hub.rooms.items()):
            core = handle.core
            if core is None or handle.closed:
                continue
            try:
                await self._resync(block_id, handle, core)
            except RedisError as exc:
                handle.needs_resync = True  # housekeeping tries again
                log.warning("resync of %s failed: %s", block_id, exc)

    async def resync_pending(self) -> None:
        """Housekeeping: resync rooms that noticed Redis lost something of theirs."""
        for block_id, handle in list(self.hub.rooms.items()):
            if handle.needs_resync and handle.core is not None and not handle.closed:
                await self._resync(block_id, handle, handle.core)

    async def _resync(self, block_id: str, handle: RoomHandle, core: RoomCore) -> None:
        self.hub.metrics.resyncs.inc()
        handle.needs_resync = False
        members = [(m.id, _LETTER[m.role], m.client_id) for m in core.members.values()]
        status, epoch, mentor_away = await self.hub.store.resync(
            block_id,
            session=core.session,
            now_ms=now_ms(),
            new_epoch=secrets.token_hex(8),
            snapshot=core.full_update(),
            members=members,
        )
        if status == "closed":
            self.hub.close_local(block_id, handle, "mentor-left")
            return
        await self.hub.register(block_id)
        if epoch != core.epoch:
            # Redis lost the room (restart): count from its new log, take what the
            # first re-seeder wrote, and give it whatever only this gateway holds.
            core.epoch = epoch
            core.applied_seq = 0
            loaded = await self.hub.store.load(block_id)
            if isinstance(loaded, str):
                return
            remote: Doc[Text] = Doc()
            if loaded.snapshot:
                remote.apply_update(loaded.snapshot)
            for _, update in loaded.entries:
                remote.apply_update(update)
            missing = core.doc.get_update(remote.get_state())
            before = core.doc.get_state()
            core.load(loaded.snapshot, loaded.entries, loaded.seq)
            core.doc_bytes = loaded.doc_bytes
            news = core.doc.get_update(before)
            if news != EMPTY_UPDATE:
                self.hub.fanout(handle, protocol.sync_update(news))
            if missing != EMPTY_UPDATE:
                self.hub.outbox.update(block_id, core.session, missing)
        self.hub.outbox.release(block_id)
        await self.catch_up(handle)
        if mentor_away:
            deadline = now_ms() + int(self.hub.settings.mentor_grace_seconds * 1000)
            await self.hub.redis.zadd(self.hub.keys.closing, {block_id: deadline}, nx=True)

    async def check_rooms(self) -> None:
        """Periodic: catch up any room whose log is ahead of what was applied here."""
        handles = [(b, h) for b, h in self.hub.rooms.items() if h.core is not None and not h.closed]
        if not handles:
            return
        async with self.hub.redis.pipeline(transaction=False) as pipe:
            for block_id, _ in handles:
                keys = self.hub.keys.room(block_id)
                pipe.hmget(keys.state, "session", "seq", "epoch")
                pipe.get(keys.tomb)
            results = await pipe.execute()
        for i, (block_id, handle) in enumerate(handles):
            (session, seq, epoch), tomb = results[2 * i], results[2 * i + 1]
            core = handle.core
            if core is None or handle.needs_resync:
                continue
            if session is None:
                if tomb is not None and tomb.decode() == core.session:
                    self.hub.close_local(block_id, handle, "mentor-left")
                else:
                    handle.needs_resync = True  # Redis lost the room
            elif session.decode() != core.session:
                self.hub.close_local(block_id, handle, "mentor-left")
            elif epoch.decode() != core.epoch:
                handle.needs_resync = True
            elif int(seq) > core.applied_seq:
                self.hub.spawn(self.catch_up(handle))
            else:
                # Updates from other gateways are checked by their publisher; should it
                # have gone before its update came back, the text is checked here.
                self.schedule_solved(handle)
