"""The operator side's Lua scripts (sessions/backend_redis.py, docs/backend.md): a message
posted into a session, a session deleted whole, a takeover. Each touches the keys of exactly
one session (one Cluster slot), and appends with sessions/scripts.py's shared body."""

from sessions.scripts import _APPEND

# KEYS: meta, log, nodes, notes, client ids; ARGV: event, maxlen, ttl, note (memory item json),
#       notes kept, client id ("" = none: not deduplicated), client ids kept
# A message posted into the session: appended to the log like any event, and its memory item
# queued for the next turn (START moves it into memory). Idempotent per client id (a resent
# operator ``send``): the first one's offset comes back with the duplicate flag 1. Returns
# {offset, duplicate, node...}, or {-1} when the session does not exist.
POST = (
    """
local meta, log, event, maxlen, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', meta) == 0 then return {-1} end
if ARGV[6] ~= '' then
  local old = redis.call('ZSCORE', KEYS[5], ARGV[6])
  if old then return {tonumber(old), 1} end
end
local seq
"""
    + _APPEND
    + """
redis.call('RPUSH', KEYS[4], ARGV[4])
redis.call('LTRIM', KEYS[4], -tonumber(ARGV[5]), -1)
redis.call('EXPIRE', KEYS[4], ttl)
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[5], seq, ARGV[6])
  redis.call('ZREMRANGEBYRANK', KEYS[5], 0, -tonumber(ARGV[7]) - 1)
  redis.call('EXPIRE', KEYS[5], ttl)
end
local out = {seq, 0}
for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do out[#out + 1] = n end
return out
"""
)

# KEYS: every key of the session (Keys.session_keys: meta, log, turns, ..., nodes 5th);
# ARGV: owner ("" = any)
# Deletes the session whole. Returns {owner, oldest pending turn (0: none), node...} as they
# were; {''} when it did not exist (its leftovers are deleted anyway); {'forbidden', owner}
# (nothing deleted) when ARGV[1] is not its owner. With meta and the lock gone every fenced
# write of a worker still running a turn fails (APPEND/SUBMIT: no meta; START/REMEMBER: no
# lock), so nothing of the session is written again.
DELETE = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and ARGV[1] ~= '' and owner ~= ARGV[1] then return {'forbidden', owner} end
local first = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 1)
local turn = 0
if #first > 0 then turn = tonumber(string.match(first[1][1], '%-(%d+)$')) end
local out = {owner or '', turn}
for _, n in ipairs(redis.call('HKEYS', KEYS[5])) do out[#out + 1] = n end
redis.call('DEL', unpack(KEYS))
return out
"""

# KEYS: meta, log, nodes, turns; ARGV: event, maxlen, ttl, operator ("" = give the session
#       back to the agent)
# Operator takeover (docs/backend.md): sets or clears meta ``op`` and appends the ``takeover``
# event, unless the session is in that state already (nothing appended: offset 0). Taking over
# marks a turn whose attempt has begun (meta a:<turn>) cancelled, like CANCEL; a turn not begun
# yet is held by START instead. Returns {offset, turn cancelled (0: none), node...}, or {-1}
# when the session does not exist.
TAKEOVER = (
    """
local meta, log, event, maxlen, ttl = KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local had = redis.call('HGET', meta, 'op')
if (ARGV[4] == '' and not had) or (ARGV[4] ~= '' and had == ARGV[4]) then return {0, 0} end
local turn = 0
if ARGV[4] == '' then
  redis.call('HDEL', meta, 'op')
else
  redis.call('HSET', meta, 'op', ARGV[4])
  local first = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)
  if #first > 0 then
    local t = tonumber(string.match(first[1][1], '%-(%d+)$'))
    if redis.call('HEXISTS', meta, 'a:' .. t) == 1 then
      redis.call('HSET', meta, 'x:' .. t, 1)
      turn = t
    end
  end
end
local seq
"""
    + _APPEND
    + """
local out = {seq, turn}
for _, n in ipairs(redis.call('HKEYS', KEYS[3])) do out[#out + 1] = n end
return out
"""
)
