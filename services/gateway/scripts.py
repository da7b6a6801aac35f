"""The Lua scripts that change a room's state in Redis atomically (run by ``store.py``).

Every change to a room is one script, which also publishes the matching channel
message, so the channel's order is the state's order (docs/redis.md). The messages'
format is ``channel.py``'s; the Lua here writes ``U``, ``P``, ``S`` and ``C`` exactly as
its encoders do (tests/gateway/test_scripts.py decodes and re-encodes what it publishes).
"""

from __future__ import annotations

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
# none), now ms, member cap, new session id, template snapshot, mentor grace ms.
# Returns {letter, session, epoch, m, s, w, pv, mentor_left_at or ''}, {'full', session},
# or {'expired', session}: the mentor is away and their grace is over (its deadline in the
# closing set was lost), so the session must end before anyone else joins it.
JOIN = (
    _COUNTS
    + """
local session = redis.call('HGET', KEYS[1], 'session')
if not session then
  session = ARGV[7]
  redis.call('DEL', KEYS[2], KEYS[3], KEYS[7])
  redis.call('HSET', KEYS[1], 'session', session, 'epoch', session, 'opened_at', ARGV[5],
    'mentor', '', 'n_mentor', 0, 'n_student', 0, 'n_watcher', 0, 'peak_students', 0,
    'seq', 0, 'snap_seq', 0, 'doc_bytes', string.len(ARGV[8]), 'solved', 0,
    'solved_seq', 0, 'ever_solved', 0, 'hist_bytes', 0, 'hist_cut', 0)
  redis.call('SET', KEYS[4], ARGV[8])
  redis.call('XADD', KEYS[7], '*', 'k', 'o', 'd', ARGV[8])
end
local mentor = redis.call('HGET', KEYS[1], 'mentor') or ''
local left_at = redis.call('HGET', KEYS[1], 'mentor_left_at')
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
if letter ~= 'm' and left_at and tonumber(ARGV[5]) - tonumber(left_at) >= tonumber(ARGV[9]) then
  return {'expired', session}
end
local m, s, w = counts()
if letter ~= 'm' and s + w >= tonumber(ARGV[6]) then
  return {'full', session}
end
if letter == 'm' then
  redis.call('HDEL', KEYS[1], 'mentor_left_at')
  left_at = false
end
redis.call('HSET', KEYS[2], ARGV[1], letter .. ARGV[3])
redis.call('HINCRBY', KEYS[1], ROLE_FIELD[letter], 1)
redis.call('XADD', KEYS[7], '*', 'k', 'j', 'a', letter .. ARGV[3])
local pv
m, s, w, pv = presence()
if s > tonumber(redis.call('HGET', KEYS[1], 'peak_students') or 0) then
  redis.call('HSET', KEYS[1], 'peak_students', s)
end
return {letter, session, redis.call('HGET', KEYS[1], 'epoch'), m, s, w, pv, left_at or ''}
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
  redis.call('XADD', KEYS[7], '*', 'k', 'l', 'a', ids[i + 1])
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

# ARGV: session, gateway id, history bound (HISTORY_MAX_BYTES), author tags (docs/replay.md),
# update (last: the outbox appends it to a prefix encoded once per room). Returns {seq,
# doc_bytes, entries since snapshot}, {-1} when the session is over, {-2} when Redis has
# lost the room (restart). The update also goes to the history while it is under the bound.
PUBLISH = """
local v = redis.call('HMGET', KEYS[1], 'session', 'snap_seq', 'epoch', 'hist_bytes')
if not v[1] then return {-2, 0, 0} end
if v[1] ~= ARGV[1] then return {-1, 0, 0} end
local size = string.len(ARGV[5])
local bytes = redis.call('HINCRBY', KEYS[1], 'doc_bytes', size)
local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
redis.call('XADD', KEYS[3], seq .. '-1', 'u', ARGV[5])
if tonumber(v[4] or 0) + size <= tonumber(ARGV[3]) then
  redis.call('HINCRBY', KEYS[1], 'hist_bytes', size)
  redis.call('XADD', KEYS[7], '*', 'k', 'u', 'a', ARGV[4], 'd', ARGV[5])
else
  redis.call('HSET', KEYS[1], 'hist_cut', 1)
end
redis.call('PUBLISH', KEYS[5],
  'U' .. ARGV[2] .. '\\0' .. v[3] .. '\\0' .. seq .. '\\0' .. ARGV[5])
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
# Both flips are published ('S' solved, 'N' no longer): every gateway keeps the flag's
# value, and checks its own text again on 'N' (the next match may be another's to see).
SOLVED = """
local v = redis.call('HMGET', KEYS[1], 'session', 'solved', 'solved_seq')
if v[1] ~= ARGV[1] or tonumber(ARGV[2]) < tonumber(v[3]) then return 0 end
redis.call('HSET', KEYS[1], 'solved_seq', ARGV[2])
if ARGV[3] == '1' and v[2] ~= '1' then
  redis.call('HSET', KEYS[1], 'solved', 1, 'ever_solved', 1)
  redis.call('XADD', KEYS[7], '*', 'k', 's')
  redis.call('PUBLISH', KEYS[5], 'S' .. ARGV[2])
  return 1
end
if ARGV[3] == '0' and v[2] == '1' then
  redis.call('HSET', KEYS[1], 'solved', 0)
  redis.call('PUBLISH', KEYS[5], 'N' .. ARGV[2])
end
return 0
"""

# ARGV: session ('' = any), now ms, grace ms, reason, force (1 = close now).
# Returns {'closed', session, opened_at, ever_solved, peak, mentor, snapshot, hist_cut,
# n history entries, (id, kind, author, data) x n, seq1, u1, ...},
# {'wait', deadline ms}, {'stale'} (mentor back) or {'none'} (no such room/session).
CLOSE = (
    _COUNTS
    + """
local st = redis.call('HMGET', KEYS[1], 'session', 'mentor_left_at', 'opened_at',
  'ever_solved', 'peak_students', 'mentor', 'hist_cut')
if not st[1] or (ARGV[1] ~= '' and st[1] ~= ARGV[1]) then return {'none'} end
if ARGV[5] ~= '1' then
  local m = counts()
  if m > 0 or not st[2] then return {'stale'} end
  local deadline = tonumber(st[2]) + tonumber(ARGV[3])
  if tonumber(ARGV[2]) < deadline then return {'wait', tostring(deadline)} end
end
local out = {'closed', st[1], st[3] or '0', st[4] or '0', st[5] or '0', st[6] or '',
  redis.call('GET', KEYS[4]) or '', st[7] or '0'}
local history = redis.call('XRANGE', KEYS[7], '-', '+')
table.insert(out, #history)
for _, e in ipairs(history) do
  local f = {}
  for i = 1, #e[2], 2 do f[e[2][i]] = e[2][i + 1] end
  table.insert(out, e[1]); table.insert(out, f.k or '')
  table.insert(out, f.a or ''); table.insert(out, f.d or '')
end
for _, e in ipairs(redis.call('XRANGE', KEYS[3], '-', '+')) do
  table.insert(out, string.match(e[1], '^(%d+)'))
  table.insert(out, e[2][2])
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[7])
redis.call('SET', KEYS[6], st[1], 'EX', 86400)
redis.call('PUBLISH', KEYS[5], 'C' .. st[1] .. '\\0' .. ARGV[4])
return out
"""
)

# After a lost Redis connection (or a Redis restart, a failover): put this gateway's
# members back. ARGV: session, now ms, new epoch, snapshot (the gateway's whole document),
# the epoch and seq this gateway applied, suspect ('1': the room's primary failed over, so
# the state may lack acknowledged writes), then triples member id, role letter, client
# id. The state is re-seeded (new epoch, this document as the snapshot) when it is
# missing, or when it is the epoch this gateway knows but behind what it applied or
# suspect (docs/cluster.md, "Failover"): the first gateway to come re-seeds, the others
# then see another epoch and publish what the new state lacks. Returns
# {'ok', epoch, mentor_away} or {'closed'} when the room has another session now.
RESYNC = (
    _COUNTS
    + """
local session = redis.call('HGET', KEYS[1], 'session')
local reseed = false
if not session then
  if redis.call('GET', KEYS[6]) == ARGV[1] then return {'closed'} end
  reseed = true
elseif session ~= ARGV[1] then
  return {'closed'}
else
  local st = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
  if st[1] == ARGV[5] and (ARGV[7] == '1' or tonumber(st[2] or '0') < tonumber(ARGV[6])) then
    reseed = true
  end
end
if reseed then
  -- Presence versions only grow (gateways drop an older P): continue above anything
  -- seen, even when the old state is gone (restart) or behind (failover).
  local pv = tonumber(redis.call('HGET', KEYS[1], 'pv') or '0') + 1
  if pv < tonumber(ARGV[2]) then pv = ARGV[2] end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
  redis.call('HSET', KEYS[1], 'pv', pv)
  redis.call('HSET', KEYS[1], 'session', ARGV[1], 'epoch', ARGV[3], 'opened_at', ARGV[2],
    'mentor', '', 'n_mentor', 0, 'n_student', 0, 'n_watcher', 0, 'peak_students', 0,
    'seq', 0, 'snap_seq', 0, 'doc_bytes', string.len(ARGV[4]), 'solved', 0,
    'solved_seq', 0, 'ever_solved', 0, 'hist_bytes', 0, 'hist_cut', 0)
  redis.call('SET', KEYS[4], ARGV[4])
  redis.call('XADD', KEYS[7], '*', 'k', 'r', 'd', ARGV[4])
end
local mentor = redis.call('HGET', KEYS[1], 'mentor') or ''
for i = 8, #ARGV, 3 do
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
