"""Room state in Redis: a thin client over the Lua scripts of ``scripts.py``.

``RoomStore`` is the gateway's only way to read and change a room's state; each method
runs one script (atomic, and publishing its channel message) and returns typed values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

from services.gateway.channel import Presence
from services.gateway.scripts import (
    CLOSE,
    COMPACT,
    JOIN,
    LEAVE,
    LOAD,
    PUBLISH,
    RESYNC,
    SOLVED,
    ZREM_IF,
)
from shared.keys import Keys, RoomKeys
from shared.replay import HistoryEntry


def now_ms() -> int:
    """Wall-clock milliseconds: the time base of every timestamp kept in Redis."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Joined:
    role: str  # 'mentor' | 'student' | 'watcher' | 'full' | 'expired'
    session: str
    presence: Presence | None = None
    # When the mentor left, if they are away (ms): the grace this join must not lose.
    mentor_left_at: int | None = None


@dataclass(frozen=True, slots=True)
class Loaded:
    session: str
    epoch: str
    seq: int
    doc_bytes: int
    presence: Presence
    solved: bool
    snapshot: bytes | None
    entries: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class Closed:
    session: str
    opened_at_ms: int
    solved: bool
    peak_students: int
    mentor: str
    snapshot: bytes
    entries: list[tuple[int, bytes]]
    history: list[HistoryEntry] = field(default_factory=list)
    history_cut: bool = False  # HISTORY_MAX_BYTES was reached: updates stopped being kept


_ROLE = {b"m": "mentor", b"s": "student", b"w": "watcher"}


def _entries(flat: list[Any]) -> list[tuple[int, bytes]]:
    return [(int(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]


def _history(flat: list[Any]) -> list[HistoryEntry]:
    return [
        HistoryEntry(
            int(bytes(flat[i]).split(b"-", 1)[0]),
            bytes(flat[i + 1]).decode(errors="replace"),
            bytes(flat[i + 2]).decode(errors="replace"),
            bytes(flat[i + 3]),
        )
        for i in range(0, len(flat), 4)
    ]


class RoomStore:
    """The gateway's only way to read and change room state in Redis."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._join = redis.register_script(JOIN)
        self._leave = redis.register_script(LEAVE)
        self._publish = redis.register_script(PUBLISH)  # run by the outbox (EVALSHA)
        self._compact = redis.register_script(COMPACT)
        self._load = redis.register_script(LOAD)
        self._solved = redis.register_script(SOLVED)
        self._close = redis.register_script(CLOSE)
        self._resync = redis.register_script(RESYNC)
        self._zrem_if = redis.register_script(ZREM_IF)

    @property
    def publish_sha(self) -> str:
        """SHA1 of the PUBLISH script (the outbox pipelines it with EVALSHA)."""
        return str(self._publish.sha)

    @property
    def publish_script(self) -> str:
        """The PUBLISH script's text as registered (sharded on a cluster: SPUBLISH)."""
        script = self._publish.script
        return script.decode() if isinstance(script, bytes) else str(script)

    def _k(self, block_id: str) -> list[str]:
        return self.keys.room(block_id).as_list()

    def room_keys(self, block_id: str) -> RoomKeys:
        return self.keys.room(block_id)

    async def join(
        self,
        block_id: str,
        member_id: str,
        *,
        watcher: bool,
        client_id: str,
        claimed_session: str,
        now_ms: int,
        cap: int,
        new_session: str,
        template: bytes,
        grace_ms: int,
    ) -> Joined:
        """Join the room's current session (opening one if none is open). A room whose
        mentor's grace is over is not joined: ``expired``, and the caller ends it first."""
        args: list[Any] = [member_id, "watcher" if watcher else "", client_id, claimed_session]
        args += [now_ms, cap, new_session, template, grace_ms]
        r = await self._join(keys=self._k(block_id), args=args)
        if r[0] in (b"full", b"expired"):
            return Joined(r[0].decode(), r[1].decode())
        counts = Presence(int(r[6]), int(r[3]) > 0, int(r[4]), int(r[5]))
        left_at = int(r[7]) if r[7] else None
        return Joined(_ROLE[r[0]], r[1].decode(), counts, left_at)

    async def leave(
        self, block_id: str, member_or_prefix: str, now_ms: int, *, prefix: bool = False
    ) -> tuple[int, bool, bool]:
        r = await self._leave(
            keys=self._k(block_id), args=[member_or_prefix, now_ms, "prefix" if prefix else ""]
        )
        return int(r[0]), bool(int(r[1])), bool(int(r[2]))

    async def compact(self, block_id: str, session: str, seq: int, snapshot: bytes) -> bool:
        return bool(await self._compact(keys=self._k(block_id), args=[session, seq, snapshot]))

    async def load(self, block_id: str, from_seq: int = -1) -> Loaded | str:
        """The room's state beyond ``from_seq`` (-1: all of it); if the room is not open,
        the session that closed last there ("" if none: Redis may have lost the room)."""
        r = await self._load(keys=self._k(block_id), args=[from_seq])
        if r[0] is None:
            return bytes(r[1]).decode()
        return Loaded(
            session=r[0].decode(),
            epoch=r[1].decode(),
            seq=int(r[2]),
            doc_bytes=int(r[4]),
            presence=Presence(int(r[5]), int(r[6]) > 0, int(r[7]), int(r[8])),
            solved=r[9] == b"1",
            snapshot=bytes(r[10]) if r[10] is not None else None,
            entries=_entries(r[11:]),
        )

    async def mark_solved(self, block_id: str, session: str, seq: int, matched: bool) -> bool:
        r = await self._solved(keys=self._k(block_id), args=[session, seq, 1 if matched else 0])
        return bool(r)

    async def end_session(
        self, block_id: str, *, session: str, now_ms: int, grace_ms: int, reason: str, force: bool
    ) -> Closed | tuple[str, int]:
        """The CLOSE script: end the session fleet-wide if the mentor's grace is over (or
        now, with ``force``); its channel message sends every gateway's members home."""
        r = await self._close(
            keys=self._k(block_id), args=[session, now_ms, grace_ms, reason, 1 if force else 0]
        )
        status = r[0].decode()
        if status != "closed":
            return status, int(r[1]) if status == "wait" else 0
        return Closed(
            session=r[1].decode(),
            opened_at_ms=int(r[2]),
            solved=r[3] == b"1",
            peak_students=int(r[4]),
            mentor=r[5].decode(),
            snapshot=bytes(r[6]),
            history_cut=r[7] == b"1",
            history=_history(r[9 : 9 + 4 * int(r[8])]),
            entries=_entries(r[9 + 4 * int(r[8]) :]),
        )

    async def resync(
        self,
        block_id: str,
        *,
        session: str,
        now_ms: int,
        new_epoch: str,
        snapshot: bytes,
        members: list[tuple[str, str, str]],
        epoch: str = "",
        applied_seq: int = 0,
        suspect: bool = False,
    ) -> tuple[str, str, bool]:
        """RESYNC: ``epoch``/``applied_seq`` are what this gateway holds; ``suspect``: the
        room's primary failed over (re-seed unless another gateway already did)."""
        args: list[Any] = [session, now_ms, new_epoch, snapshot, epoch, applied_seq, int(suspect)]
        for member_id, letter, client in members:
            args += [member_id, letter, client]
        r = await self._resync(keys=self._k(block_id), args=args)
        if r[0] == b"closed":
            return "closed", "", False
        return "ok", r[1].decode(), bool(int(r[2]))

    async def current_session(self, block_id: str) -> str | None:
        """The room's open session, None if it is not open."""
        raw = await self.redis.hget(self.keys.room(block_id).state, "session")
        return raw.decode() if isinstance(raw, bytes) else raw

    async def register(self, block_id: str, gateway_id: str) -> None:
        """The room is open and this gateway serves members of it (for the lobby and
        for the reaper, should the gateway die)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.sadd(self.keys.rooms, block_id)
            pipe.sadd(self.keys.gateway_rooms(gateway_id), block_id)
            await pipe.execute()

    async def forget_closing(self, block_id: str, score: int) -> None:
        await self._zrem_if(keys=[self.keys.closing], args=[block_id, score])
