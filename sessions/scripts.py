"""Lua scripts. Each touches the keys of exactly one session (one Cluster slot).

Log entries have ids ``0-<offset>``: offsets are contiguous integers per session, so a gap is
visible to anyone (edge, client) and ``XRANGE log (0-<after> +`` resumes exactly.
"""

# KEYS: meta, nodes, user_sessions-free; ARGV: user, new_epoch, now, ttl, node ("" = none)
OPEN = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[1] then
  return {'forbidden'}
end
if not owner then
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', ARGV[2], 'seq', 0, 'done', 0,
             'created', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[5], 1)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
local m = redis.call('HMGET', KEYS[1], 'epoch', 'seq')
return {'ok', m[1], m[2]}
"""

# Shared body: append one event to the log; returns the new offset.
# Expects locals: meta, log, event, maxlen, ttl.
_APPEND = """
local seq = redis.call('HINCRBY', meta, 'seq', 1)
redis.call('XADD', log, 'MAXLEN', '~', maxlen, '0-' .. seq, 'e', event)
redis.call('EXPIRE', log, ttl)
redis.call('EXPIRE', meta, ttl)
"""

# KEYS: meta, log, nodes; ARGV: event, maxlen, ttl, done ("" = leave), turns key ("" = none)
APPEND = (
    """
local meta, log, event, maxlen, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', meta) == 0 then return {-1} end
"""
    + _APPEND
    + """
if ARGV[4] ~= '' then
  redis.call('HSET', meta, 'done', ARGV[4])
  redis.call('HDEL', meta, 'a:' .. ARGV[4], 'm:' .. ARGV[4], 'x:' .. ARGV[4])
  redis.call('XTRIM', ARGV[5], 'MINID', '0-' .. (tonumber(ARGV[4]) + 1))
end
local out = {seq}
for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do out[#out + 1] = n end
return out
"""
)

# KEYS: meta, log, turns, cids, nodes
# ARGV: client id, event, turn body (json), maxlen, ttl, cids kept, turns maxlen
SUBMIT = (
    """
local meta, log, event, maxlen, ttl = KEYS[1], KEYS[2], ARGV[2], ARGV[4], ARGV[5]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local done = tonumber(redis.call('HGET', meta, 'done'))
local old = redis.call('ZSCORE', KEYS[4], ARGV[1])
if old then return {tonumber(old), 1, done} end
"""
    + _APPEND
    + """
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '0-' .. seq, 'b', ARGV[3])
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('ZADD', KEYS[4], seq, ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[4], 0, -tonumber(ARGV[6]) - 1)
redis.call('EXPIRE', KEYS[4], ttl)
local out = {seq, 0, done}
for _, n in ipairs(redis.call('HKEYS', KEYS[5])) do out[#out + 1] = n end
return out
"""
)

# KEYS: meta, memory; ARGV: turn
# Starts one attempt of a turn: counts it, remembers the memory length before the first
# attempt (a retry truncates memory back to it) and reports a pending cancel.
BEGIN = """
local attempts = redis.call('HINCRBY', KEYS[1], 'a:' .. ARGV[1], 1)
local mlen = redis.call('LLEN', KEYS[2])
redis.call('HSETNX', KEYS[1], 'm:' .. ARGV[1], mlen)
local keep = tonumber(redis.call('HGET', KEYS[1], 'm:' .. ARGV[1]))
if mlen > keep then redis.call('LTRIM', KEYS[2], 0, keep - 1) end
if keep == 0 then redis.call('DEL', KEYS[2]) end
local cancel = redis.call('HGET', KEYS[1], 'x:' .. ARGV[1])
return {attempts, cancel and 1 or 0}
"""

# KEYS: lock; ARGV: owner, lease ms
# Takes a free lock, or one this same worker process left behind (it checks first that it is
# not running the session any more), e.g. after Redis failed between a turn and the release.
ACQUIRE = """
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

# KEYS: lock, turns; ARGV: owner
# Releases the session only when no turn is pending, atomically: a turn submitted before this
# runs keeps the lock with its holder, one submitted after finds the lock free.
RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
if redis.call('XLEN', KEYS[2]) > 0 then return 0 end
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
