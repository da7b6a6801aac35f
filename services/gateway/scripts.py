"""Room state in Redis: the Lua scripts that change it atomically, and a thin client.

Every change to a room is one script, which also publishes the matching channel
message, so the channel's order is the state's order (docs/redis.md). The messages'
format is ``channel.py``'s; the Lua here writes ``U``, ``P``, ``S`` and ``C`` exactly as
its encoders do (tests/gateway/test_scripts.py decodes and re-encodes what it publishes).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from services.gateway.channel import Presence
from shared.keys import Keys, RoomKeys

# KEYS for every room script: state, members, log, doc, channel, tomb.
_COUNTS = """
local function counts()
  local v = redis.call('HMGET', KEYS[1], 'n_mentor', 'n_student', 'n_watcher')
  return tonumber(v[1] or 0), tonumber(v[2] or 0), tonumber(v[3] or 0)
end
local function presence()
  local m, s, w = counts()
  local here = 0
  if m > 0 then here = 1 end
  local pv = redis.call('HINCRBY', KEYS[1], 'pv', 1)
  redis.call('PUBLISH', KEYS[5], 'P' .. pv .. '\\0' .. here .. '\\0' .. s .. '\\0' .. w)
  return m, s, w, pv
end
local ROLE_FIELD = {m = 'n_mentor', s = 'n_student', w = 'n_watcher'}
"""

# ARGV: member id, requested role ('watcher' or ''), client id, claimed session ('' if
# none), now ms, member cap, new session id, template snapshot
JOIN = (
    _COUNTS
    + """
local session = redis.call('HGET', KEYS[1], 'session')
if not session then
  session = ARGV[7]
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'session', session, 'epoch', session, 'opened_at', ARGV[5],
    'mentor', '', 'n_mentor', 0, 'n_student', 0, 'n_watcher', 0, 'peak_students', 0,
    'seq', 0, 'snap_seq', 0, 'doc_bytes', string.len(ARGV[8]), 'solved', 0,
    'solved_seq', 0, 'ever_solved', 0)
  redis.call('SET', KEYS[4], ARGV[8])
end
local mentor = redis.call('HGET', KEYS[1], 'mentor') or ''
local letter
if ARGV[2] == 'watcher' then
  letter = 'w'
elseif ARGV[4] ~= '' and ARGV[4] == session and mentor == ARGV[3] then
  letter = 'm'
elseif mentor == '' then
  letter = 'm'
  redis.call('HSET', KEYS[1], 'mentor', ARGV[3])
else
  letter = 's'
end
local m, s, w = counts()
if letter ~= 'm' and s + w >= tonumber(ARGV[6]) then
  return {'full', session}
end
if letter == 'm' then redis.call('HDEL', KEYS[1], 'mentor_left_at') end
redis.call('HSET', KEYS[2], ARGV[1], letter .. ARGV[3])
redis.call('HINCRBY', KEYS[1], ROLE_FIELD[letter], 1)
local pv
m, s, w, pv = presence()
if s > tonumber(redis.call('HGET', KEYS[1], 'peak_students') or 0) then
  redis.call('HSET', KEYS[1], 'peak_students', s)
end
return {letter, session, redis.call('HGET', KEYS[1], 'epoch'), m, s, w, pv}
"""
)

# Removes members whose id starts with ARGV[1] (one id, or a dead gateway's prefix when
# ARGV[3] == 'prefix'). ARGV[2]: now ms. Returns {removed, mentor_away, empty_unowned}.
LEAVE = (
    _COUNTS
    + """
local ids = {}
if ARGV[3] == 'prefix' then
  local all = redis.call('HGETALL', KEYS[2])
  for i = 1, #all, 2 do
    if string.sub(all[i], 1, string.len(ARGV[1])) == ARGV[1] then
      table.insert(ids, all[i]); table.insert(ids, all[i + 1])
    end
  end
else
  local v = redis.call('HGET', KEYS[2], ARGV[1])
  if v then ids = {ARGV[1], v} end
end
if #ids == 0 then return {0, 0, 0} end
local mentor_gone = false
for i = 1, #ids, 2 do
  redis.call('HDEL', KEYS[2], ids[i])
  local letter = string.sub(ids[i + 1], 1, 1)
  local n = redis.call('HINCRBY', KEYS[1], ROLE_FIELD[letter], -1)
  if letter == 'm' and n <= 0 then mentor_gone = true end
end
local m, s, w = presence()
local away = 0
if mentor_gone and m <= 0 then
  redis.call('HSET', KEYS[1], 'mentor_left_at', ARGV[2])
  away = 1
end
local empty = 0
if m + s + w <= 0 and (redis.call('HGET', KEYS[1], 'mentor') or '') == '' then empty = 1 end
return {#ids / 2, away, empty}
"""
)

# ARGV: session, gateway id, update. Returns {seq, doc_bytes, entries since snapshot},
# {-1} when the session is over, {-2} when Redis has lost the room (restart).
PUBLISH = """
local v = redis.call('HMGET', KEYS[1], 'session', 'snap_seq', 'epoch')
if not v[1] then return {-2, 0, 0} end
if v[1] ~= ARGV[1] then return {-1, 0, 0} end
local bytes = redis.call('HINCRBY', KEYS[1], 'doc_bytes', string.len(ARGV[3]))
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[3], seq .. '-1', 'u', ARGV[3])
redis.call('PUBLISH', KEYS[5],
  'U' .. ARGV[2] .. '\\0' .. v[3] .. '\\0' .. seq .. '\\0' .. ARGV[3])
return {seq, bytes, seq - tonumber(v[2])}
"""

# ARGV: session, seq the snapshot covers, snapshot.
COMPACT = """
local v = redis.call('HMGET', KEYS[1], 'session', 'snap_seq')
if v[1] ~= ARGV[1] or tonumber(ARGV[2]) <= tonumber(v[2]) then return 0 end
redis.call('SET', KEYS[4], ARGV[3])
redis.call('XTRIM', KEYS[3], 'MINID', (tonumber(ARGV[2]) + 1) .. '-0')
local bytes = string.len(ARGV[3])
for _, e in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
  bytes = bytes + string.len(e[2][2])
end
redis.call('HSET', KEYS[1], 'snap_seq', ARGV[2], 'doc_bytes', bytes)
return 1
"""

# ARGV: applied seq of the caller (-1 = nothing yet: the snapshot is always included).
# Returns {session, epoch, seq, snap_seq, doc_bytes, pv, n_mentor, n_student, n_watcher,
# solved, snapshot or false, seq1, update1, ...}, or {false, last closed session} when
# the room is not open.
LOAD = """
local v = redis.call('HMGET', KEYS[1], 'session', 'epoch', 'seq', 'snap_seq', 'doc_bytes',
  'pv', 'n_mentor', 'n_student', 'n_watcher', 'solved')
if not v[1] then return {false, redis.call('GET', KEYS[6]) or ''} end
local from = tonumber(ARGV[1])
local out = {v[1], v[2], v[3], v[4], v[5], v[6] or '0', v[7] or '0', v[8] or '0', v[9] or '0',
  v[10] or '0'}
if from < tonumber(v[4]) then
  out[11] = redis.call('GET', KEYS[4]) or ''
  from = tonumber(v[4])
else
  out[11] = false
end
for _, e in ipairs(redis.call('XRANGE', KEYS[3], '(' .. from .. '-1', '+')) do
  table.insert(out, string.match(e[1], '^(%d+)'))
  table.insert(out, e[2][2])
end
return out
"""

# ARGV: session, seq the check saw, matched (1/0). Returns 1 when it became solved.
SOLVED = """
local v = redis.call('HMGET', KEYS[1], 'session', 'solved', 'solved_seq')
if v[1] ~= ARGV[1] or tonumber(ARGV[2]) < tonumber(v[3]) then return 0 end
redis.call('HSET', KEYS[1], 'solved_seq', ARGV[2])
if ARGV[3] == '1' and v[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'solved', 1, 'ever_solved', 1)
  redis.call('PUBLISH', KEYS[5], 'S' .. ARGV[2])
  return 1
end
if ARGV[3] == '0' and v[2] == '1' then redis.call('HSET', KEYS[1], 'solved', 0) end
return 0
"""

# ARGV: session ('' = any), now ms, grace ms, reason, force (1 = close now).
# Returns {'closed', session, opened_at, ever_solved, peak, mentor, snapshot, seq1, u1, ...},
# {'wait', deadline ms}, {'stale'} (mentor back) or {'none'} (no such room/session).
CLOSE = (
    _COUNTS
    + """
local st = redis.call('HMGET', KEYS[1], 'session', 'mentor_left_at', 'opened_at',
  'ever_solved', 'peak_students', 'mentor')
if not st[1] or (ARGV[1] ~= '' and st[1] ~= ARGV[1]) then return {'none'} end
if ARGV[5] ~= '1' then
  local m = counts()
  if m > 0 or not st[2] then return {'stale'} end
  local deadline = tonumber(st[2]) + tonumber(ARGV[3])
  if tonumber(ARGV[2]) < deadline then return {'wait', tostring(deadline)} end
end
local out = {'closed', st[1], st[3] or '0', st[4] or '0', st[5] or '0', st[6] or '',
  redis.call('GET', KEYS[4]) or ''}
for _, e in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
  table.insert(out, string.match(e[1], '^(%d+)'))
  table.insert(out, e[2][2])
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('SET', KEYS[6], st[1], 'EX', 86400)
redis.call('PUBLISH', KEYS[5], 'C' .. st[1] .. '\\0' .. ARGV[4])
return out
"""
)

# After a lost Redis connection (or a Redis restart): put this gateway's members back.
# ARGV: session, now ms, new epoch, snapshot (the gateway's whole document), then
# triples member id, role letter, client id. Returns {'ok', epoch, mentor_away} or
# {'closed'} when the room has another session now.
RESYNC = (
    _COUNTS
    + """
local session = redis.call('HGET', KEYS[1], 'session')
if not session then
  if redis.call('GET', KEYS[6]) == ARGV[1] then return {'closed'} end
  redis.call('DEL', KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'session', ARGV[1], 'epoch', ARGV[3], 'opened_at', ARGV[2],
    'mentor', '', 'n_mentor', 0, 'n_student', 0, 'n_watcher', 0, 'peak_students', 0,
    'seq', 0, 'snap_seq', 0, 'doc_bytes', string.len(ARGV[4]), 'solved', 0,
    'solved_seq', 0, 'ever_solved', 0)
  redis.call('SET', KEYS[4], ARGV[4])
elseif session ~= ARGV[1] then
  return {'closed'}
end
local mentor = redis.call('HGET', KEYS[1], 'mentor') or ''
for i = 5, #ARGV, 3 do
  local letter = ARGV[i + 1]
  if redis.call('HSETNX', KEYS[2], ARGV[i], letter .. ARGV[i + 2]) == 1 then
    redis.call('HINCRBY', KEYS[1], ROLE_FIELD[letter], 1)
  end
  if letter == 'm' and mentor == '' then
    mentor = ARGV[i + 2]
    redis.call('HSET', KEYS[1], 'mentor', mentor)
  end
end
local m, s, w = presence()
local away = 0
if m > 0 then
  redis.call('HDEL', KEYS[1], 'mentor_left_at')
elseif mentor ~= '' then
  if not redis.call('HGET', KEYS[1], 'mentor_left_at') then
    redis.call('HSET', KEYS[1], 'mentor_left_at', ARGV[2])
  end
  away = 1
end
return {'ok', redis.call('HGET', KEYS[1], 'epoch'), away}
"""
)

# KEYS: the closing sorted set. ARGV: block id, score seen. Removes it only if unchanged.
ZREM_IF = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or -1) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
"""


def now_ms() -> int:
    """Wall-clock milliseconds: the time base of every timestamp kept in Redis."""
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Joined:
    role: str  # 'mentor' | 'student' | 'watcher' | 'full'
    session: str
    presence: Presence | None = None


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


_ROLE = {b"m": "mentor", b"s": "student", b"w": "watcher"}


def _entries(flat: list[Any]) -> list[tuple[int, bytes]]:
    return [(int(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]


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
    ) -> Joined:
        args: list[Any] = [member_id, "watcher" if watcher else "", client_id, claimed_session]
        args += [now_ms, cap, new_session, template]
        r = await self._join(keys=self._k(block_id), args=args)
        if r[0] == b"full":
            return Joined("full", r[1].decode())
        counts = Presence(int(r[6]), int(r[3]) > 0, int(r[4]), int(r[5]))
        return Joined(_ROLE[r[0]], r[1].decode(), counts)

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
            entries=_entries(r[7:]),
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
    ) -> tuple[str, str, bool]:
        args: list[Any] = [session, now_ms, new_epoch, snapshot]
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
