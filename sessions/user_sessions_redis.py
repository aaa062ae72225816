"""The users' lists of their sessions on Redis (part of :class:`sessions.roles.SessionLog`,
composed into :class:`sessions.log_redis.RedisSessionLog`): each user's sessions, most recently
active first and bounded, and the per-user limits and voice-call slots on the same Redis."""

from __future__ import annotations

import time

from sessions import keys as K
from sessions.call_slots import CallSlots
from sessions.opening import Limits, UserLimits
from sessions.redis_core import RedisCore, down


class RedisUserSessions(RedisCore):
    async def touch_user_session(self, user: str, sid: str) -> None:
        """Remember the session in the user's list (most recent first, bounded)."""
        await self.touch_user_sessions({(user, sid): time.time()})

    @down
    async def touch_user_sessions(self, seen: dict[tuple[str, str], float]) -> None:
        """Many users' sessions in one round trip (edges batch what their handshakes saw)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for (user, sid), ts in seen.items():
                key = self.keys.user_sessions(user)
                pipe.zadd(key, {sid: ts})
                pipe.zremrangebyrank(key, 0, -K.USER_SESSIONS_KEPT - 1)
                pipe.expire(key, K.SESSION_TTL)
            await pipe.execute()

    async def user_sessions(self, user: str, limit: int) -> list[tuple[str, float]]:
        """The user's sessions, most recently active first: (id, last active, unix seconds)."""
        rows = await self.redis.zrevrange(self.keys.user_sessions(user), 0, limit - 1,
                                          withscores=True)
        return [(r.decode(), float(sc)) for r, sc in rows]

    def user_limits(self, limits: Limits) -> UserLimits:
        """The per-user limits (sessions/opening.py) on this bus's Redis and prefix."""
        return UserLimits(self.redis, self.keys.prefix, limits)

    def call_slots(self) -> CallSlots:
        """Users' concurrent voice calls (sessions/call_slots.py) on this bus's Redis."""
        return CallSlots(self.redis, self.keys)
