"""Lua scripts. Each touches the keys of exactly one session (one Cluster slot).

Log entries have ids ``0-<offset>``: offsets are contiguous integers per session, so a gap is
visible to anyone (edge, client) and ``XRANGE log (0-<after> +`` resumes exactly.
"""

# KEYS: meta, nodes, log, turns, cids, memory, lock
# ARGV: user, new_epoch, now, ttl, node ("" = none), ttl until the first turn, create ("1"),
#       agent asked for ("" = none), agent of a new session ("" = none registered yet, "-" =
#       the one asked for is not registered), the workers' notice channel ("" = none)
# A node new to the session's nodes while a worker holds its lock (a turn may be streaming) is
# announced on the workers' channel ("<session> nodes"): the worker re-reads the session's nodes
# with its next tick, so the new node gets the turn's chunks at once, without the worker
# re-reading every streaming session's nodes every second (issue 13, session 13).
# A session without meta starts a new epoch from scratch: whatever else of it survived (an
# evicted or lost meta) is dropped, since offsets restart at 1 (a stream also remembers its
# last id, so a leftover log or turns stream would refuse 0-1). Without ``create`` a missing
# session answers {'new'} (the edge first counts it against the user's limits). A session
# that never got a turn (seq 0) keeps the short ttl; SUBMIT gives it the long one. HSET is the
# first write of a creation, so a Redis at maxmemory (noeviction) refuses it whole.
# The agent is fixed at creation: a new session asking for an unregistered one answers
# {'unknown'}, an existing one asked for by another name {'mismatch', its agent} (before any
# write); one without an agent (created before the registry) takes the new session's agent.
# Returns {'ok', epoch, seq, agent}.
OPEN = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
  return {'forbidden'}
end
local agent = ARGV[9]
if not owner then
  if ARGV[7] ~= '1' then return {'new'} end
  if agent == '-' then return {'unknown'} end
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', ARGV[2], 'seq', 0, 'done', 0,
             'created', ARGV[3])
  redis.call('DEL', KEYS[3], KEYS[4], KEYS[5], KEYS[6])
  if agent ~= '' then redis.call('HSET', KEYS[1], 'agent', agent) end
else
  local had = redis.call('HGET', KEYS[1], 'agent')
  if had then
    if ARGV[8] ~= '' and had ~= ARGV[8] then return {'mismatch', had} end
    agent = had
  elseif agent == '-' then
    return {'unknown'}
  elseif agent ~= '' then
    redis.call('HSET', KEYS[1], 'agent', agent)
  end
end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
local ttl = ARGV[4]
if tonumber(m[2]) == 0 then ttl = ARGV[6] end
for i = 1, 6 do redis.call('EXPIRE', KEYS[i], ttl) end
if ARGV[5] ~= '' then
  local added = redis.call('HSET', KEYS[2], ARGV[5], 1)
  redis.call('EXPIRE', KEYS[2], ttl)
  if added == 1 and ARGV[10] and ARGV[10] ~= '' and redis.call('EXISTS', KEYS[7]) == 1 then
    redis.call('PUBLISH', ARGV[10], ARGV[11] .. ' nodes')
  end
end
return {'ok', m[1], m[2], agent}
"""

# Shared body: append one event to the log, setting local ``seq`` to its offset, without
# renewing the log's and meta's ttl (_RENEW; START and a running attempt's appends, whose turn's
# SUBMIT renewed both, and whose ending renews them again). Expects locals: meta, log, event,
# maxlen.
_APPEND_KEPT = """
seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('XADD', log, 'MAXLEN', '~', maxlen, '0-' .. seq, 'e', event)
"""

# The log's and meta's ttl renewed (``ttl``, a session lives SESSION_TTL from its last write
# that renews). Both exist with a ttl whenever meta does: OPEN creates meta with one, SUBMIT
# creates the log (its first append) and renews both, and Redis runs with ``noeviction``
# (docs/deploy.md), so an append that skips it neither leaks a key nor shortens a session's
# life: the turn's ending renews them.
_RENEW = """
redis.call('EXPIRE', log, ttl)
redis.call('EXPIRE', meta, ttl)
"""

# Shared body: append ``event`` and then ARGV[from] onwards to the log with one HINCRBY of
# the offset for them all (issue 13, session 15: one inner call fewer per event after the
# first), setting local ``seq`` to the last one's offset, without renewing the ttls (as
# _APPEND_KEPT). Expects locals: meta, log, event, maxlen, ``from``.
_APPEND_ALL = """
local more = math.max(0, #ARGV - from + 1)
seq = redis.call('HINCRBY', meta, 'seq', 1 + more)
local at = seq - more
redis.call('XADD', log, 'MAXLEN', '~', maxlen, '0-' .. at, 'e', event)
for i = from, #ARGV do
  at = at + 1
  redis.call('XADD', log, 'MAXLEN', '~', maxlen, '0-' .. at, 'e', ARGV[i])
end
"""

# Shared body: the fan-out of ``events`` (offsets ``first`` on) to the delivery streams
# KEYS[k0..k1], for session ``sid``: several events go as **one** entry ``{s, o, m}`` (``m``:
# the events joined by newlines, offsets ``o`` on; a JSON event holds no raw newline, else one
# entry each), read apart by sessions/delivery_redis.py: an XADD fewer per node for START's
# ``turn_start`` + ``state thinking`` and the ending's ``state idle`` + its event (session 15).
# Expects locals: events, first, k0, k1, sid, dmax.
_FAN_OUT = """
local joined = nil
if #events > 1 and not string.find(table.concat(events), '\\n', 1, true) then
  joined = table.concat(events, '\\n')
end
for k = k0, k1 do
  if joined then
    redis.call('XADD', KEYS[k], 'MAXLEN', '~', dmax, '*', 's', sid, 'o', first, 'm', joined)
  else
    for n, e in ipairs(events) do
      redis.call('XADD', KEYS[k], 'MAXLEN', '~', dmax, '*', 's', sid, 'o', first + n - 1,
                 'e', e)
    end
  end
end
"""

# The memory list changed: its version (meta ``mv``, sessions/memory_cache.py) moves on. Every
# script that changes a session's memory list runs it (a worker's cached copy of the memory is
# then read again), on a meta that exists (a HINCRBY would make a stray one). Expects locals:
# meta, mv (set to the new version: START reports it without reading it again).
_MEM_CHANGED = """
mv = redis.call('HINCRBY', meta, 'mv', 1)
"""

# Shared body: append one event to the log and renew the ttls (_APPEND_KEPT + _RENEW).
# Expects locals: meta, log, event, maxlen, ttl.
_APPEND = _APPEND_KEPT + _RENEW

# KEYS: meta, log, nodes, lock, turns, partial, memory
# ARGV: event, maxlen, ttl, done ("" = leave), append id ("" = none), lock owner ("" = none),
#       run ("" = none: else a turn_start, whose run starts the partial buffer afresh),
#       release ("1": with ``done``, free the session lock as RELEASE does when no turn is
#       pending after it), memory max items, n (memory items, 0 = none), session id ("" =
#       no fan-out here), delivery maxlen, inbound entry id ("" = none), its consumer group,
#       the n memory items (REMEMBER's: the turn's conversation items, written with its
#       ending: one script a turn instead of two REMEMBER and the ending), more events...
#       (appended after ``event``, at the next offsets: one script for a turn's ``state`` and
#       the event it goes with)
# KEYS after the seven (a single Redis only, never a Cluster: other slots): the delivery
# streams the events are copied to here, as the caller's fan-out would (``{s, o, e}``, the
# caller's own round trip fewer; issue 13), then, with an entry id, the inbound shard whose
# entry is acked (XACK) once the lock is freed (the ending is in before its entry is acked)
# Idempotent per append id (a retried call returns the first call's offset, and reports the
# lock released when it is not the caller's any more: the first call may have freed it) and
# fenced by the session lock: a worker that lost the lock cannot write. A fenced append that
# does not end the turn leaves the log's and meta's ttl as the turn's SUBMIT set them (_RENEW:
# two EXPIREs fewer for a turn's ``speaking``); the ending and unfenced appends renew them. A
# finished turn's partial buffer is deleted (its reply holds the text). Returns {offset of the
# last event, released (1/0), next turn id, next turn body (with ``release`` and a turn still
# pending: the worker runs it next without reading the pending turns again; else ''),
# node...}, {-1} when the session is gone, {-2} when the lock is not the caller's.
APPEND = (
    """
local meta, log, event, maxlen, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
local ap = redis.call('HMGET', meta, 'seq', 'ap', 'aps')
if not ap[1] then return {-1} end
local seq, mv
local released = 0
local nxt = {'', ''}
if ARGV[5] ~= '' and ap[2] == ARGV[5] then
  seq = tonumber(ap[3])
  if ARGV[8] == '1' and redis.call('GET', KEYS[4]) ~= ARGV[6] then released = 1 end
else
  if ARGV[6] ~= '' and redis.call('GET', KEYS[4]) ~= ARGV[6] then return {-2} end
  local items = tonumber(ARGV[10])
  local from = 15 + items
"""
    + _APPEND_ALL
    + """
  if ARGV[6] == '' or ARGV[4] ~= '' then
"""
    + _RENEW
    + """
  end
  if items > 0 then
    for i = 15, 14 + items, 500 do
      redis.call('RPUSH', KEYS[7], unpack(ARGV, i, math.min(i + 499, 14 + items)))
    end
    redis.call('LTRIM', KEYS[7], -tonumber(ARGV[9]), -1)
    redis.call('EXPIRE', KEYS[7], ttl)
""" + _MEM_CHANGED + """
  end
  if ARGV[7] ~= '' then
    redis.call('DEL', KEYS[6])
    redis.call('RPUSH', KEYS[6], ARGV[7])
    redis.call('EXPIRE', KEYS[6], ttl)
  end
  if ARGV[4] ~= '' then
    if ARGV[5] ~= '' then
      redis.call('HSET', meta, 'ap', ARGV[5], 'aps', seq, 'done', ARGV[4])
    else
      redis.call('HSET', meta, 'done', ARGV[4])
    end
    redis.call('HDEL', meta, 'a:' .. ARGV[4], 'x:' .. ARGV[4], 'p:' .. ARGV[4])
    redis.call('XTRIM', KEYS[5], 'MINID', '0-' .. (tonumber(ARGV[4]) + 1))
    local gone = {KEYS[6]}
    if ARGV[8] == '1' then
      if redis.call('XLEN', KEYS[5]) == 0 then
        gone[2] = KEYS[4]
        released = 1
      else
        local first = redis.call('XRANGE', KEYS[5], '-', '+', 'COUNT', 1)[1]
        nxt = {first[1], first[2][2]}
      end
    end
    redis.call('DEL', unpack(gone))
  elseif ARGV[5] ~= '' then
    redis.call('HSET', meta, 'ap', ARGV[5], 'aps', seq)
  end
end
local streams = #KEYS
if ARGV[13] ~= '' then
  streams = streams - 1
  if released == 1 then redis.call('XACK', KEYS[#KEYS], ARGV[14], ARGV[13]) end
end
if ARGV[11] ~= '' and streams > 7 then
  local events = {ARGV[1]}
  for i = 15 + tonumber(ARGV[10]), #ARGV do events[#events + 1] = ARGV[i] end
  local first, k0, k1, sid, dmax = seq - #events + 1, 8, streams, ARGV[11], ARGV[12]
"""
    + _FAN_OUT
    + """
end
local out = {seq, released, nxt[1], nxt[2]}
for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do out[#out + 1] = n end
return out
"""
)

# KEYS: meta, log, turns, cids, nodes
# ARGV: client id, event, turn body (json), maxlen, ttl, cids kept, max pending turns,
#       default agent ("" = none registered), session id ("" = none of what follows),
#       delivery maxlen, the agent whose shard is given, live score
# KEYS after the five (a single Redis only, never a Cluster: other slots; with the session
# id): the delivery streams of the nodes the caller knows alive, the session's inbound shard
# for that agent, the user's live sessions. A new turn is then copied to those streams, queued
# (when the session's agent is that one) and its live score raised inside the script, as the
# caller's pipeline after it did (issue 13: one round trip of the edge fewer per turn).
# Returns {offset, duplicate, done, agent, queued (1: the queue entry and the live score are
# in), node...}; {-1} session gone; {-2} too many pending turns. ``agent`` is the session's
# (whose shards get the turn); a session without one (created before the registry, or while
# none was registered) takes the default agent.
# Every key it touches gets the long ttl (a session's first turn ends its short one, OPEN).
SUBMIT = (
    """
local meta, log, event, maxlen, ttl = KEYS[1], KEYS[2], ARGV[2], ARGV[4], ARGV[5]
local m0 = redis.call('HMGET', meta, 'done', 'agent')
if not m0[1] then return {-1} end
local done, agent = tonumber(m0[1]), m0[2]
if not agent then
  agent = ARGV[8]
  if agent ~= '' then redis.call('HSET', meta, 'agent', agent) end
end
local old = redis.call('ZSCORE', KEYS[4], ARGV[1])
if old then return {tonumber(old), 1, done, agent, 0} end
if redis.call('XLEN', KEYS[3]) >= tonumber(ARGV[7]) then return {-2} end
local seq
"""
    + _APPEND
    + """
redis.call('XADD', KEYS[3], '0-' .. seq, 'b', ARGV[3])
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('ZADD', KEYS[4], seq, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[6]) - 1)
redis.call('EXPIRE', KEYS[4], ttl)
redis.call('EXPIRE', KEYS[5], ttl)
local queued = 0
if ARGV[9] ~= '' then
  local n = #KEYS
  for k = 6, n - 2 do
    redis.call('XADD', KEYS[k], 'MAXLEN', '~', ARGV[10], '*', 's', ARGV[9], 'o', seq,
               'e', event)
  end
  if (agent or '') == ARGV[11] then
    redis.call('XADD', KEYS[n - 1], '*', 's', ARGV[9], 'o', seq)
    redis.call('ZADD', KEYS[n], 'XX', 'GT', ARGV[12], ARGV[9])
    queued = 1
  end
end
local out = {seq, 0, done, agent, queued}
for _, n in ipairs(redis.call('HKEYS', KEYS[5])) do out[#out + 1] = n end
return out
"""
)

# Removes the memory items a turn wrote (they are stored as "<turn>|<json>", newest last).
# Expects locals: mem, tag, meta, mv.
_ROLLBACK = """
local popped = 0
while true do
  local last = redis.call('LINDEX', mem, -1)
  if not last or string.sub(last, 1, #tag) ~= tag then break end
  redis.call('RPOP', mem)
  popped = popped + 1
end
if popped > 0 and redis.call('EXISTS', meta) == 1 then
""" + _MEM_CHANGED + """
end
"""

# KEYS: meta, memory, lock; ARGV: turn, lock owner, again ("1": the last attempt was cut
# short by a Redis outage, not by the turn: it is not counted twice)
# Starts one attempt of a turn: counts it, removes what an earlier attempt left in memory and
# reports a pending cancel. Returns {attempt, cancelled}, or {-2} if the lock is not the caller's.
BEGIN = (
    """
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {-2} end
local mem, tag, meta, mv = KEYS[2], ARGV[1] .. '|', KEYS[1], nil
local attempts = tonumber(redis.call('HGET', KEYS[1], 'a:' .. ARGV[1]) or '0')
if ARGV[3] ~= '1' or attempts == 0 then
  attempts = redis.call('HINCRBY', KEYS[1], 'a:' .. ARGV[1], 1)
end
"""
    + _ROLLBACK
    + """
local cancel = redis.call('HGET', KEYS[1], 'x:' .. ARGV[1])
return {attempts, cancel and 1 or 0}
"""
)

# KEYS: memory, lock, meta; ARGV: lock owner ("" = unfenced), max items, ttl, item...
# Appends conversation items, fenced by the session lock like APPEND.
REMEMBER = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[2]) ~= ARGV[1] then return -2 end
local meta, mv = KEYS[3], nil
for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
if #ARGV > 3 and redis.call('EXISTS', meta) == 1 then
""" + _MEM_CHANGED + """
end
return 1
"""

# KEYS: memory, meta; ARGV: turn
ROLLBACK = "local mem, tag, meta, mv = KEYS[1], ARGV[1] .. '|', KEYS[2], nil\n" + _ROLLBACK

# KEYS: lock, meta; ARGV: owner, lease ms
# Takes a free lock, or one this same worker process left behind (it checks first that it is
# not running the session any more), e.g. after Redis failed between a turn and the release.
# A session without meta (deleted, or expired) has nothing to run: 1 without taking the lock,
# so no key of a deleted session is created again; the worker finds no turn, its release
# answers "not ours" and it acks the entry.
ACQUIRE = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 1 end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lock; ARGV: owner, lease ms
RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lock, turns; ARGV: owner, force ("" = only when idle)
# Releases the session only when no turn is pending, atomically: a turn submitted before this
# runs keeps the lock with its holder, one submitted after finds the lock free. ``force`` is
# for a hand-off: the worker frees the lock, then writes a new shard entry for the session.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if ARGV[2] == '' and redis.call('XLEN', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1])
return 1
"""

# KEYS: meta, turns; ARGV: turn (0 = the oldest pending)
CANCEL = """
local done = tonumber(redis.call('HGET', KEYS[1], 'done') or '0')
local turn = tonumber(ARGV[1])
if turn == 0 then
  local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
  if #first == 0 then return 0 end
  turn = tonumber(string.match(first[1][1], '%-(%d+)$'))
end
if turn <= done then return 0 end
if #redis.call('XRANGE', KEYS[2], '0-' .. turn, '0-' .. turn) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'x:' .. turn, 1)
return turn
"""

# KEYS: the shard's dead-letter stream, the turn's mark (Keys.dead_lettered, same slot);
# ARGV: mark ttl, maxlen, field, value, ...
# Writes the turn's dead-letter entry once: a retried ending (its first try met an outage
# after this ran) finds the mark and writes nothing. Returns 1 when written, 0 when not.
DEAD_LETTER = """
if not redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""
