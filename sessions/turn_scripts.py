"""The scripts that run a turn's attempt (sessions/log_redis.py ``start_attempt``). Each
touches the keys of exactly one session (one Cluster slot), as those of scripts.py."""

from sessions.scripts import _APPEND_ALL, _FAN_OUT, _MEM_CHANGED, _ROLLBACK

# KEYS: meta, memory, lock, log, nodes, partial, notes, turns
# ARGV: turn, lock owner, again (as BEGIN), max attempts, maxlen, ttl, run nonce, memory max,
#       the turn's user message as a memory item (json; "" = made from the turn's text, with
#       ``first``), lease ms ("" = the caller holds the lock already), read memory ("" = no;
#       else the memory's version the caller holds, "1" = none: the session's memory items
#       come back in the reply unless that is the version), session id ("" = no fan-out here),
#       delivery maxlen, first ("1": the turn is known by its shard entry only: it must be
#       the first pending turn, read here, its body returned), more events...
# With ``first`` a turn that is not the first pending one (ended, or another ahead of it) gives
# {-5}, nothing written, the lock not taken (the worker reads the pending turns then, as it did
# for every turn before: issue 13, session 13, one round trip fewer a turn); {-3} (busy) when
# a turn is pending and another worker holds the lock: what the worker's read of the turns and
# its START of the first would answer (session 16: two round trips fewer for an entry read by
# one worker while another runs the session: with two, a backlog's entries often are).
# KEYS after the eight (a single Redis only, never a Cluster: other slots; with the session
# id): delivery streams the appended events are copied to, as the caller's fan-out would
# (``{s, o, e}``; issue 13, session 11: the worker's round trip after START fewer).
# With a lease the session lock is taken first as ACQUIRE takes it (free, or this owner's):
# one script fewer per turn (the worker's ACQUIRE before it); {-3} (nothing written) when
# another worker holds it. A session without meta is not locked ({0, 1, 0, ''}, as below).
# BEGIN (its rollback of an earlier attempt's memory items skipped on a turn's first attempt,
# which has none: session 15), then, unless the turn is cancelled or past its attempts (counted
# since the attempt in which it last waited for approval, meta p:<turn>, sessions/approvals.py:
# waiting for a person is progress, not failure), its turn_start appended (the event JSON is
# sessions/events.py's turn_start, byte for byte), then the more events (the turn's ``state
# thinking``) and the run's partial buffer started (run id "<turn>:<attempt>:<nonce>"): one script
# per attempt instead of two; the log's and meta's ttl are left as the turn's SUBMIT renewed them
# (scripts.py _RENEW; the ending renews them again). Posted messages waiting in ``notes`` move
# into memory first, tagged "n|" (a tag ROLLBACK never matches, and they sit before this attempt's
# items: a retry keeps them).
# While an operator holds the session (meta ``op``, TAKEOVER) the turn does not run: its user
# message is queued in ``notes`` (the agent sees it after the release, in order with the
# operator's messages) and {attempt, 2, 0, '', body} is returned (the worker ends it ``cancelled``
# with reason ``takeover``). Checked here, under the lock, so no attempt starts in a takeover.
# Returns {-2} if the lock is not the caller's (without a lease), {-3} if it is another's
# (with one); {0, 1, 0, ''} if the session is gone; else
# {attempt, cancelled, offset of the last event appended (0: none appended), run, the turn's
# body (with ``first``; else ''), n, [version,] n memory
# items (with ``read memory``: what the agent's memory holds once this script ran, oldest first;
# the worker's memory read, one round trip fewer per turn; n -1 and no item when the version,
# "<epoch>:<mv>:<length>", is the one the caller holds: sessions/memory_cache.py), node...}.
START = (
    """
local meta, log, maxlen, ttl = KEYS[1], KEYS[4], ARGV[5], ARGV[6]
local holder = redis.call('GET', KEYS[3])
if holder ~= ARGV[2] and ARGV[10] == '' then return {-2} end
local m = redis.call('HMGET', meta, 'seq', 'a:' .. ARGV[1], 'x:' .. ARGV[1],
                    'p:' .. ARGV[1], 'op', 'epoch', 'mv')
if not m[1] then return {0, 1, 0, ''} end
local body = ''
if ARGV[14] == '1' then
  local first = redis.call('XRANGE', KEYS[8], '-', '+', 'COUNT', 1)[1]
  if not first or first[1] ~= '0-' .. ARGV[1] then
    if first and holder and holder ~= ARGV[2] then return {-3} end
    return {-5}
  end
  body = first[2][2]
end
if holder ~= ARGV[2] then
  if holder then return {-3} end
  redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[10])
end
local mem, tag, mv = KEYS[2], ARGV[1] .. '|', m[7] or '0'
local attempts = tonumber(m[2] or '0')
local fresh = false
if ARGV[3] ~= '1' or attempts == 0 then
  attempts = redis.call('HINCRBY', meta, 'a:' .. ARGV[1], 1)
  fresh = attempts == 1
end
if not fresh then
"""
    + _ROLLBACK
    + """
end
local cancel = m[3]
local since = tonumber(m[4] or '0')
if cancel or attempts - since > tonumber(ARGV[4]) then
  return {attempts, cancel and 1 or 0, 0, '', body}
end
if m[5] then
  local note = ARGV[9]
  if note == '' then
    note = '{"role":"user","content":' .. cjson.encode(cjson.decode(body)['t']) .. '}'
  end
  redis.call('RPUSH', KEYS[7], note)
  redis.call('LTRIM', KEYS[7], -tonumber(ARGV[8]), -1)
  redis.call('EXPIRE', KEYS[7], ttl)
  return {attempts, 2, 0, '', body}
end
local notes = redis.call('LRANGE', KEYS[7], 0, -1)
if #notes > 0 then
  for _, n in ipairs(notes) do redis.call('RPUSH', mem, 'n|' .. n) end
  redis.call('DEL', KEYS[7])
  redis.call('LTRIM', mem, -tonumber(ARGV[8]), -1)
  redis.call('EXPIRE', mem, ttl)
"""
    + _MEM_CHANGED
    + """
end
local run = ARGV[1] .. ':' .. attempts .. ':' .. ARGV[7]
local event = '{"type":"turn_start","turn":' .. ARGV[1] .. ',"attempt":' .. attempts .. '}'
local seq
local from = 15
"""
    + _APPEND_ALL
    + """
redis.call('DEL', KEYS[6])
redis.call('RPUSH', KEYS[6], run)
redis.call('EXPIRE', KEYS[6], ttl)
if ARGV[12] ~= '' then
  local events = {event}
  for i = 15, #ARGV do events[#events + 1] = ARGV[i] end
  local first, k0, k1, sid, dmax = seq - #events + 1, 9, #KEYS, ARGV[12], ARGV[13]
"""
    + _FAN_OUT
    + """
end
local out = {attempts, 0, seq, run, body}
if ARGV[11] ~= '' then
  local version = (m[6] or '') .. ':' .. mv .. ':' .. redis.call('LLEN', mem)
  out[7] = version
  if version == ARGV[11] then
    out[6] = -1
  else
    local items = redis.call('LRANGE', mem, 0, -1)
    out[6] = #items
    for _, m in ipairs(items) do out[#out + 1] = m end
  end
else
  out[6] = 0
end
for _, n in ipairs(redis.call('HKEYS', KEYS[5])) do out[#out + 1] = n end
return out
"""
)

