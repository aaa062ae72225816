"""Concurrent voice calls per user, deployment-wide: slots with leases in Redis.

A call holds a slot from the moment ``POST /v1/voice/sessions`` accepts it until its job ends.
Each slot is a member (the room name) of the user's sorted set (``sessions.keys.user_calls``)
scored by the time its lease ends (unix ms). The control plane takes the slot (refused past
``AGENTIA_VOICE_MAX_CALLS_PER_USER``) and gives it back when the call does not start; the
voice job refreshes it while the call runs and releases it when the job ends. A slot whose
holder died without releasing it (a job process killed, the worker host lost) stops counting
when its lease ends (``CALL_SLOT_LEASE``), so a lost release never locks a user out for long.
"""

from __future__ import annotations

import time
from typing import Any

from sessions import keys as K
from sessions.redis_client import REDIS_DOWN

# KEYS[1] = the user's calls; ARGV = now (ms), lease (ms), max calls, room.
# Expired slots are dropped first; a room already holding a slot is only refreshed.
ACQUIRE = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if not redis.call('ZSCORE', KEYS[1], ARGV[4])
   and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[4])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return 1
"""

# The same refresh without the limit: a running call always counts, even if its slot lapsed
# while Redis was unreachable (it is then counted again rather than left out).
REFRESH = """
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(last[2]) - now))
return redis.call('ZCARD', KEYS[1])
"""


class SlotsUnavailable(Exception):
    """Redis could not be reached: the call's slot could not be taken or refreshed."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class CallSlots:
    """Slots of one deployment (one Redis, one key prefix)."""

    def __init__(self, redis: Any, keys: K.Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._acquire = redis.register_script(ACQUIRE)
        self._refresh = redis.register_script(REFRESH)

    async def acquire(self, user: str, room: str, limit: int,
                      lease_s: float = K.CALL_SLOT_LEASE) -> bool:
        """Take a slot for ``room``; False when ``user`` already holds ``limit`` live ones."""
        args = [_now_ms(), int(lease_s * 1000), limit, room]
        return bool(await self._call(self._acquire, user, args))

    async def refresh(self, user: str, room: str, lease_s: float = K.CALL_SLOT_LEASE) -> int:
        """Extend ``room``'s lease (taking the slot again if it lapsed); the user's live calls."""
        return int(await self._call(self._refresh, user, [_now_ms(), int(lease_s * 1000), room]))

    async def release(self, user: str, room: str) -> None:
        try:
            await self.redis.zrem(K.user_calls(self.keys, user), room)
        except REDIS_DOWN as exc:
            raise SlotsUnavailable() from exc

    async def claim_end(self, session: str, room: str, by: str) -> bool:
        """Whether ``by`` is the first to end the call in ``room`` (then it writes the
        ``call`` ``ended`` event; nobody else does)."""
        try:
            return bool(await self.redis.set(K.call_end(self.keys, session, room), by, nx=True,
                                             ex=K.CALL_END_TTL))
        except REDIS_DOWN as exc:
            raise SlotsUnavailable() from exc

    async def count(self, user: str) -> int:
        """Live (unexpired) calls of ``user``."""
        try:
            return int(await self.redis.zcount(K.user_calls(self.keys, user), f"({_now_ms()}",
                                               "+inf"))
        except REDIS_DOWN as exc:
            raise SlotsUnavailable() from exc

    async def _call(self, script: Any, user: str, args: list[Any]) -> Any:
        try:
            return await script(keys=[K.user_calls(self.keys, user)], args=args)
        except REDIS_DOWN as exc:
            raise SlotsUnavailable() from exc
