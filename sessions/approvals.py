"""Human approval of tool calls, durable in Redis (docs/architecture.md "The pause").

A turn whose agent calls a tool that needs approval pauses: the worker stores the Agents SDK's
``RunState`` (JSON), the turn's memory items so far and one request per pending tool call in
the session's pause record (:meth:`sessions.keys.Keys.pause`), and appends the
``approval_request`` events, in one script (``PAUSE``). A client's ``approve`` (any edge)
records the decision and appends its ``approval_result`` in one script (``DECIDE``): the first
answer wins, any later one finds no pending request. The edge then tells the workers on the
cancel channel; the waiting worker also re-reads the record every
:data:`APPROVAL_RECHECK_S`, so a lost notice delays a decision and never loses it. A worker
that dies while the turn waits leaves the record behind: the next attempt of the turn restores
the memory items and the state from it (``RESUME``) and goes on from the pause, without asking
the model again and without a second ``approval_request``.

Every script touches the keys of one session (one Cluster slot).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from agentia.codes import AgentiaError, ErrorCode
from sessions import events as E
from sessions import keys as K
from sessions import scripts
from sessions.delivery_redis import RedisNodeDelivery
from sessions.errors import LockLost
from sessions.redis_core import down
from sessions.roles import Decision, PauseRecord, Request

log = logging.getLogger("agentia.approvals")

APPROVAL_RECHECK_S = 5.0
"""How often a worker waiting for decisions re-reads the pause record (besides the notices
the edges publish): the bound on how late a decision whose notice was lost is seen."""
APPROVAL_NOTICE = "approval"
"""The word after ``"<session> <turn>"`` on the cancel channel that means "a decision"."""

# KEYS: meta, log, nodes, lock, pause, memory
# ARGV: owner, turn, attempt, state, maxlen, ttl, n, reply text so far, then n x (call id,
#       request, expires, event), then the events to append after new requests (state)
# Records the pause (fenced by the lock): the state, the reply's text so far, the turn's
# memory items so far (they are tagged "<turn>|"), each request not recorded yet with its
# approval_request event appended, and the attempt it paused in (meta p:<turn>: attempts are
# counted from there, START). A record of an older turn, or of an earlier epoch of the
# session (its meta was lost and the session made anew: turns count from 1 again), is
# replaced; DECIDE and RESUME ignore one. Returns {-2} lock lost, {-1} session gone, else
# {pairs, index, offset, ..., node...}: the events appended (index into requests + extras).
PAUSE = (
    """
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return {-2} end
local meta, log, maxlen, ttl, pause = KEYS[1], KEYS[2], ARGV[5], ARGV[6], KEYS[5]
if redis.call('EXISTS', meta) == 0 then return {-1} end
local epoch = redis.call('HGET', meta, 'epoch')
local was = redis.call('HMGET', pause, 'turn', 'epoch')
if was[1] ~= ARGV[2] or was[2] ~= epoch then redis.call('DEL', pause) end
local tag, items = ARGV[2] .. '|', {}
local all = redis.call('LRANGE', KEYS[6], 0, -1)
for i = #all, 1, -1 do
  if string.sub(all[i], 1, #tag) ~= tag then break end
  table.insert(items, 1, all[i])
end
redis.call('HSET', pause, 'turn', ARGV[2], 'epoch', epoch, 'state', ARGV[4], 'text', ARGV[8],
           'mn', #items)
for i, it in ipairs(items) do redis.call('HSET', pause, 'm:' .. i, it) end
redis.call('HSET', meta, 'p:' .. ARGV[2], ARGV[3])
local n, out, seq = tonumber(ARGV[7]), {}, 0
for i = 0, n - 1 do
  local b = 9 + 4 * i
  if redis.call('HSETNX', pause, 'q:' .. ARGV[b], ARGV[b + 1]) == 1 then
    redis.call('HSET', pause, 'x:' .. ARGV[b], ARGV[b + 2])
    local event = ARGV[b + 3]
"""
    + scripts._APPEND
    + """
    out[#out + 1] = i
    out[#out + 1] = seq
  end
end
if #out > 0 then
  for j = 9 + 4 * n, #ARGV do
    local event = ARGV[j]
"""
    + scripts._APPEND
    + """
    out[#out + 1] = n + j - (9 + 4 * n)
    out[#out + 1] = seq
  end
end
redis.call('EXPIRE', pause, ttl)
table.insert(out, 1, #out / 2)
for _, node in ipairs(redis.call('HKEYS', KEYS[3])) do out[#out + 1] = node end
return out
"""
)

# KEYS: pause, meta, log, nodes
# ARGV: turn, call id, event (the approval_result: also the decision), maxlen, ttl,
#       now (unix s; 0 = a timeout, which ignores the expiry)
# Records one decision, once: only for a request of ``turn`` that is pending (recorded, not
# decided, not expired, its turn neither finished nor cancelled), appending its
# approval_result. Returns {0} when there is no such request, else {offset, node...}.
DECIDE = (
    """
local pause, meta, log, maxlen, ttl = KEYS[1], KEYS[2], KEYS[3], ARGV[4], ARGV[5]
local p = redis.call('HMGET', pause, 'turn', 'epoch')
if p[1] ~= ARGV[1] or p[2] ~= redis.call('HGET', meta, 'epoch') then return {0} end
local cid = ARGV[2]
local r = redis.call('HMGET', pause, 'q:' .. cid, 'x:' .. cid, 'd:' .. cid)
if not r[1] or r[3] then return {0} end
local now = tonumber(ARGV[6])
if now > 0 and tonumber(r[2]) <= now then return {0} end
local m = redis.call('HMGET', meta, 'done', 'x:' .. ARGV[1])
if not m[1] or tonumber(m[1]) >= tonumber(ARGV[1]) or m[2] then return {0} end
redis.call('HSET', pause, 'd:' .. cid, ARGV[3])
local event, seq = ARGV[3], 0
"""
    + scripts._APPEND
    + """
local out = {seq}
for _, node in ipairs(redis.call('HKEYS', KEYS[4])) do out[#out + 1] = node end
return out
"""
)

# KEYS: pause, memory, lock, meta; ARGV: turn, owner, max items, ttl
# A new attempt of a paused turn: START removed the turn's memory items, put back those the
# pause recorded (the items after it are made again) and return the record. {-2} lock lost,
# {0} no pause of this turn, else {1, {field, value, ...}}.
RESUME = """
if redis.call('GET', KEYS[3]) ~= ARGV[2] then return {-2} end
local pause, mem, tag, meta, mv = KEYS[1], KEYS[2], ARGV[1] .. '|', KEYS[4], nil
local p = redis.call('HMGET', pause, 'turn', 'epoch')
if p[1] ~= ARGV[1] or p[2] ~= redis.call('HGET', meta, 'epoch') then return {0} end
local last = redis.call('LINDEX', mem, -1)
if not (last and string.sub(last, 1, #tag) == tag) then
  local n = tonumber(redis.call('HGET', pause, 'mn') or '0')
  for i = 1, n do redis.call('RPUSH', mem, redis.call('HGET', pause, 'm:' .. i)) end
  redis.call('LTRIM', mem, -tonumber(ARGV[3]), -1)
  redis.call('EXPIRE', mem, ARGV[4])
  if n > 0 then
""" + scripts._MEM_CHANGED + """
  end
end
return {1, redis.call('HGETALL', pause)}
"""


def decision_of(raw: bytes) -> Decision:
    """A recorded decision (the approval_result event JSON)."""
    ev = orjson.loads(raw)
    return Decision(bool(ev["approved"]), str(ev["by"]), ev.get("message"))


def no_such_approval(ref: str | None = None) -> AgentiaError:
    return AgentiaError(ErrorCode.NO_SUCH_APPROVAL,
                        "no pending approval request with that call_id in this session", ref)


class RedisApprovals(RedisNodeDelivery):
    """The pause record and its scripts; appends deliver like the session log's."""

    _pause_s: Any = None
    _decide_s: Any = None
    _resume_s: Any = None

    def _scripts(self) -> tuple[Any, Any, Any]:
        if self._pause_s is None:
            self._pause_s = self.redis.register_script(PAUSE)
            self._decide_s = self.redis.register_script(DECIDE)
            self._resume_s = self.redis.register_script(RESUME)
        return self._pause_s, self._decide_s, self._resume_s

    # ------------------------------------------------------------ edges

    @down
    async def approve(self, sid: str, call_id: str, approved: bool, *, by: str,
                      message: str | None = None) -> int:
        """Record a person's decision on a pending tool call (first answer wins) and append
        its ``approval_result``; returns its offset. Raises ``no_such_approval``."""
        turn = await self.redis.hget(self.keys.pause(sid), "turn")
        if turn is None:
            raise no_such_approval()
        offset = await self.decide(sid, int(turn), call_id, approved, by, message, time.time())
        if not offset:
            raise no_such_approval()
        try:  # the record is the truth: a lost notice costs the worker's next re-read
            await self.redis.publish(self.keys.cancel_channel(),
                                     f"{sid} {int(turn)} {APPROVAL_NOTICE}")
        except Exception as exc:  # the decision is recorded: the ack goes out all the same
            log.warning("approval notice for session %s not published: %s", sid, exc)
        return offset

    async def decide(self, sid: str, turn: int, call_id: str, approved: bool, by: str,
                     message: str | None, now: float) -> int:
        """``DECIDE``: the approval_result's offset, 0 when no such request is pending."""
        k = self.keys
        event = orjson.dumps(E.approval_result(turn, call_id, approved, by, message))
        await self._webhook_mark(sid)
        res = await self._run_script(
            self._scripts()[1], keys=[k.pause(sid), k.meta(sid), k.log(sid), k.nodes(sid)],
            args=[turn, call_id, event, self.log_maxlen, K.SESSION_TTL, now])
        offset = int(res[0])
        if offset > 0:
            await self._fan_out(sid, offset, event, res[1:])
        return offset

    # ------------------------------------------------------------ workers

    @down
    async def pause(self, sid: str, turn: int, attempt: int, owner: str, state: str,
                    text: str, requests: list[Request], extras: list[E.Event]
                    ) -> list[Request]:
        """Record the pause (``PAUSE``): the requests not recorded before get their
        ``approval_request`` (then ``extras``, e.g. a ``state``); returns those new ones."""
        k = self.keys
        events = [orjson.dumps(E.approval_request(turn, r.call_id, r.name, r.arguments,
                                                  r.agent, r.expires, r.private))
                  for r in requests]
        events += [orjson.dumps(e) for e in extras]
        args: list[Any] = [owner, turn, attempt, state, self.log_maxlen, K.SESSION_TTL,
                           len(requests), text]
        for r, ev in zip(requests, events, strict=False):
            args += [r.call_id, orjson.dumps(_request_fields(r)), r.expires, ev]
        args += events[len(requests):]
        await self._webhook_mark(sid)
        res = await self._run_script(
            self._scripts()[0], keys=[k.meta(sid), k.log(sid), k.nodes(sid), k.lock(sid),
                                      k.pause(sid), k.memory(sid)], args=args)
        if int(res[0]) == -2:
            raise LockLost(sid)
        if int(res[0]) < 0:
            return []
        pairs = int(res[0])
        nodes = res[1 + 2 * pairs:]
        new: list[Request] = []
        for j in range(pairs):
            index, offset = int(res[1 + 2 * j]), int(res[2 + 2 * j])
            await self._fan_out(sid, offset, events[index], nodes)
            if index < len(requests):
                new.append(requests[index])
        return new

    @down
    async def resume_pause(self, sid: str, turn: int, owner: str) -> PauseRecord | None:
        """``RESUME``: the pause record of ``turn`` (None if it did not pause), with the
        turn's memory items as they were at the pause."""
        k = self.keys
        res = await self._run_script(
            self._scripts()[2], keys=[k.pause(sid), k.memory(sid), k.lock(sid), k.meta(sid)],
            args=[turn, owner, K.MEMORY_MAXLEN, K.SESSION_TTL])
        if int(res[0]) == -2:
            raise LockLost(sid)
        if int(res[0]) == 0:
            return None
        flat = res[1]
        return _record(dict(zip(flat[::2], flat[1::2], strict=True)))

    @down
    async def decisions(self, sid: str, turn: int, call_ids: list[str]
                        ) -> dict[str, Decision] | None:
        """The decisions recorded so far for ``call_ids`` (None: the record is gone)."""
        row = await self.redis.hmget(self.keys.pause(sid),
                                     ["turn", *(f"d:{c}" for c in call_ids)])
        if row[0] is None or int(row[0]) != turn:
            return None
        return {c: decision_of(raw) for c, raw in zip(call_ids, row[1:], strict=True)
                if raw is not None}

    @down
    async def mark_waiting(self, sid: str, turn: int, attempt: int) -> None:
        """A resumed attempt waits again: attempts are counted from here (meta p:<turn>)."""
        await self.redis.hset(self.keys.meta(sid), f"p:{turn}", attempt)

    @down
    async def end_pause(self, sid: str) -> None:
        """The paused turn ended: drop its record (its requests are closed)."""
        await self.redis.delete(self.keys.pause(sid))


def _request_fields(r: Request) -> dict[str, Any]:
    return {"name": r.name, "arguments": r.arguments, "agent": r.agent, "private": r.private}


def _record(h: dict[bytes, bytes]) -> PauseRecord:
    requests: dict[str, Request] = {}
    decisions: dict[str, Decision] = {}
    for field, value in h.items():
        kind, _, cid = field.decode().partition(":")
        if kind == "q":
            q = orjson.loads(value)
            requests[cid] = Request(cid, q["name"], q["arguments"], q["agent"],
                                    float(h.get(b"x:" + cid.encode(), b"0")),
                                    bool(q.get("private")))
        elif kind == "d":
            decisions[cid] = decision_of(value)
    return PauseRecord(h[b"state"].decode(), h.get(b"text", b"").decode(), requests, decisions)
