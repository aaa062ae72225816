"""Conversation memory for the Agents SDK, one Redis list per session (Cluster-safe).

Implements the SDK's ``Session`` protocol. All of a session's memory lives in one key whose hash
tag matches the session's other keys, so no command ever crosses slots.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, Protocol

import orjson
import redis.asyncio as aioredis
from agents.items import TResponseInputItem
from agents.memory.session import Session
from agents.memory.session_settings import SessionSettings

from agentia.codes import BusUnavailable
from sessions import keys as K
from sessions import scripts
from sessions.errors import LockLost
from sessions.redis_client import REDIS_DOWN, is_down


class Memory(Session, Protocol):
    """The agent's memory of one session for one attempt of a turn: the SDK's ``Session``,
    plus ``outage``, set when Redis failed under it (the worker then counts the attempt as an
    outage, not the turn's failure). :class:`RedisMemory` here, ``DaprMemory`` in
    sessions/memory_dapr.py (``AGENTIA_MEMORY=dapr``)."""

    outage: bool


class RedisMemory:
    """The items of one conversation; the oldest are dropped beyond ``max_items``.

    Each item is stored as ``<turn>|<json>`` so that a retried turn can remove what its failed
    attempt wrote (``BEGIN``/``ROLLBACK`` in scripts.py) without touching older turns.

    The Agents SDK wraps (and redacts) what its session raises, so a Redis outage here is
    also recorded in ``outage``: the worker then treats the failed attempt as an outage, not
    as the turn's failure.
    """

    session_settings: SessionSettings | None = None

    def __init__(self, redis: aioredis.Redis, keys: K.Keys, session_id: str, turn: int = 0,
                 max_items: int = K.MEMORY_MAXLEN, owner: str = "",
                 remember: Any = None) -> None:
        self.redis: Any = redis  # see Bus.redis
        self.tag = b"%d|" % turn
        self.key = keys.memory(session_id)
        self.lock = keys.lock(session_id)
        self.owner = owner
        self._remember = remember or redis.register_script(scripts.REMEMBER)
        self.session_id = session_id
        self.max_items = max_items
        self.outage = False

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        start = -limit if limit else 0
        raw = await self._call(self.redis.lrange(self.key, start, -1))
        return [orjson.loads(r.partition(b"|")[2]) for r in raw]

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if not items:
            return
        res = await self._call(self._remember(
            keys=[self.key, self.lock],
            args=[self.owner, self.max_items, K.SESSION_TTL,
                  *[self.tag + orjson.dumps(_plain(i)) for i in items]]))
        if int(res) == -2:
            raise LockLost(self.session_id)

    async def pop_item(self) -> TResponseInputItem | None:
        raw = await self._call(self.redis.rpop(self.key))
        return orjson.loads(raw.partition(b"|")[2]) if raw else None

    async def clear_session(self) -> None:
        await self._call(self.redis.delete(self.key))

    async def _call(self, op: Awaitable[Any]) -> Any:
        try:
            return await op
        except (*REDIS_DOWN, AttributeError) as exc:
            if not is_down(exc):
                raise
            self.outage = True
            raise BusUnavailable() from exc


def _plain(item: Any) -> Any:
    """Items may hold pydantic models; store their JSON form."""
    if hasattr(item, "model_dump"):
        return item.model_dump(exclude_unset=True)
    return item
