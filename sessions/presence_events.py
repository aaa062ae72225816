"""``presence`` events in the session log (``AGENTIA_PRESENCE_EVENTS=1``, off by default;
docs/protocol.md "Event types").

A ``presence`` event is the session's presence after a change: ``devices`` (the user's
connections), ``operator`` (an operator's connection is open), ``call`` (a voice call holds
the session), ``ts``. It is computed and appended by one script on the session's slot
(:data:`PRESENCE`) from what the edges write to the presence hash (``{sid}:pres``, every
0.5 s, sessions/backend_redis.py ``PresenceWriter``) and from the session's nodes (a dead
node is dropped from them by the next fan-out, and its devices stop counting). Edges run it
for the sessions whose devices came or went in a flush; a voice call when it starts and ends.

Bounded log growth: an event only when the state differs from the last one written (meta
``ps``), and at most one per ``PRESENCE_EVENT_MIN_S`` per session from device and operator
changes; a change within that time is written at its end, by the edge that saw it (it keeps
the session and asks again at each flush). A call's start and end are always written. So a
connect/disconnect storm on a session adds at most one event per 2 s (1,800 an hour) plus two
per call.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agentia.codes import BusUnavailable
from sessions import keys as K
from sessions import scripts
from sessions.redis_client import REDIS_DOWN

log = logging.getLogger("agentia.presence")

# KEYS: meta, log, nodes, pres; ARGV: now (ms), min interval (ms), force ("1": a call started
# or ended), maxlen, ttl, ts (unix s, as text)
# Returns {0} nothing to write (no change, or no session), {-1} changed but too soon (ask
# again later), else {offset, the event, node...}.
PRESENCE = (
    """
local meta, log, maxlen, ttl = KEYS[1], KEYS[2], ARGV[4], ARGV[5]
if redis.call('EXISTS', meta) == 0 then return {0} end
local nodes = redis.call('HKEYS', KEYS[3])
local held, call = {}, false
for _, n in ipairs(nodes) do
  held[n] = true
  if string.sub(n, 1, 6) == 'voice-' then call = true end
end
local devices, op = 0, false
local pres = redis.call('HGETALL', KEYS[4])
for i = 1, #pres, 2 do
  local node = string.match(pres[i], '^(.*):[^:]*$')
  if node and held[node] then
    if string.find(pres[i + 1], '"op":true', 1, true) then op = true
    else devices = devices + 1 end
  end
end
local state = devices .. '|' .. tostring(op) .. '|' .. tostring(call)
local m = redis.call('HMGET', meta, 'ps', 'pt')
if (m[1] or '0|false|false') == state then return {0} end
if ARGV[3] ~= '1' and m[2] and tonumber(ARGV[1]) - tonumber(m[2]) < tonumber(ARGV[2]) then
  return {-1}
end
local event = '{"type":"presence","devices":' .. devices .. ',"operator":' .. tostring(op)
  .. ',"call":' .. tostring(call) .. ',"ts":' .. ARGV[6] .. '}'
local seq
"""
    + scripts._APPEND
    + """
redis.call('HSET', meta, 'ps', state, 'pt', ARGV[1])
local out = {seq, event}
for _, n in ipairs(nodes) do out[#out + 1] = n end
return out
"""
)


async def record(bus: Any, sids: list[str], *, force: bool = False) -> list[str]:
    """Append a ``presence`` event to each of these sessions whose presence changed (one
    pipeline, then the fan-outs); returns the sessions to ask again later (changed too soon
    after their last event). Nothing when presence events are off. Raises what the client
    raises."""
    if not getattr(bus, "presence_events", False) or not sids:
        return []
    for sid in sids:
        await bus._webhook_mark(sid)
    k, now = bus.keys, time.time()
    async with bus.redis.pipeline(transaction=False) as pipe:
        for sid in sids:
            pipe.execute_command(
                "EVAL", PRESENCE, 4, k.meta(sid), k.log(sid), k.nodes(sid), k.presence(sid),
                int(now * 1000), int(K.PRESENCE_EVENT_MIN_S * 1000), "1" if force else "",
                bus.log_maxlen, K.SESSION_TTL, f"{now:.3f}")
        replies = await pipe.execute()
    later = []
    for sid, res in zip(sids, replies, strict=True):
        offset = int(res[0])
        if offset < 0:
            later.append(sid)
        elif offset:
            await bus._fan_out(sid, offset, res[1], res[2:])
    return later


async def call_changed(bus: Any, sid: str) -> None:
    """A voice call of ``sid`` started or ended (its node joined or left the session's
    nodes): the ``presence`` event now, whatever the rate limit. A Redis failure costs the
    event (a warning), never the call."""
    try:
        await record(bus, [sid], force=True)
    except (*REDIS_DOWN, BusUnavailable) as exc:
        log.warning("presence event of session %s not written: %s", sid, exc)
