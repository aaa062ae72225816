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
from sessions.memory_cache import Items, KnownPlain, decode
from sessions.redis_client import REDIS_DOWN, is_down
from sessions.sdk_history import plain

# KEYS: memory, meta. The SDK's ``pop_item`` (the newest item, nil when none) and, with ARGV[1]
# "clear", its ``clear_session``: with the memory's version moved on (_MEM_CHANGED).
POP = """
local meta, out, mv = KEYS[2], nil, nil
if ARGV[1] == 'clear' then
  if redis.call('DEL', KEYS[1]) == 0 then return nil end
else
  out = redis.call('RPOP', KEYS[1])
  if not out then return nil end
end
if redis.call('EXISTS', meta) == 1 then
""" + scripts._MEM_CHANGED + """
end
return out
"""


class Memory(Session, Protocol):
    """The agent's memory of one session for one attempt of a turn: the SDK's ``Session``,
    plus ``outage``, set when Redis failed under it (the worker then counts the attempt as an
    outage, not the turn's failure), and the items not written yet: ``take_unsaved`` (the
    worker writes them with the turn's ending) and ``save`` (before a pause).
    :class:`RedisMemory` here, ``DaprMemory`` in sessions/memory_dapr.py
    (``AGENTIA_MEMORY=dapr``: this memory as its journal, ended turns in the state store)."""

    outage: bool

    def take_unsaved(self) -> list[bytes]: ...

    async def save(self) -> None: ...


class RedisMemory:
    """The items of one conversation; the oldest are dropped beyond ``max_items``.

    Each item is stored as ``<turn>|<json>`` so that a retried turn can remove what its failed
    attempt wrote (``BEGIN``/``ROLLBACK`` in scripts.py) without touching older turns.

    Items the SDK adds are kept here, not written (reads see them after the stored ones): the
    worker writes them with the turn's ending, in its ``APPEND`` script (issue 13: the SDK
    adds twice a turn, the input and then the output, each a ``REMEMBER`` script before), or
    with :meth:`save` before the turn waits for approval. An attempt that fails never wrote
    them: nothing to roll back but what a pause saved.

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
        self.meta = keys.meta(session_id)
        self.lock = keys.lock(session_id)
        self.owner = owner
        self._remember = remember or redis.register_script(scripts.REMEMBER)
        self.session_id = session_id
        self.max_items = max_items
        self.outage = False
        self.unsaved: list[bytes] = []
        """Items added and not written yet, stored form (``<turn>|<json>``), oldest first."""
        self.known: list[Any] | None = None
        """The stored items as the attempt's ``START`` read them, decoded (:meth:`preload`;
        shared with the worker's cache, sessions/memory_cache.py: never changed here): the
        first :meth:`get_items` answers from them instead of reading Redis (one round trip
        fewer per turn, and no decoding when the cache held them); later reads go to Redis."""

    def preload(self, items: list[Any]) -> None:
        """The stored items (decoded), read by the attempt's ``START`` just before the run."""
        self.known = items

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        known, self.known = self.known, None
        every = False
        if known is not None:
            every = isinstance(known, Items) and _all_plain(known)
            stored = known[-limit:] if limit else known
        else:
            start = -limit if limit else 0
            stored = [decode(r) for r in await self._call(self.redis.lrange(self.key, start,
                                                                             -1))]
        new = [decode(r) for r in self.unsaved]
        items = [*stored, *new][-(limit or self.max_items):]
        if every and all(plain(i) for i in new):
            return KnownPlain(items)  # sdk_history.py looks at none of them again
        return items

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        self.unsaved.extend(self.tag + orjson.dumps(_plain(i)) for i in items)

    def take_unsaved(self) -> list[bytes]:
        """The items not written yet (for the turn's ending to write); none are kept."""
        items, self.unsaved = self.unsaved, []
        return items

    async def save(self) -> None:
        """Write the unsaved items now (``REMEMBER``, fenced by the session lock)."""
        self.known = None
        if not self.unsaved:
            return
        res = await self._call(self._remember(
            keys=[self.key, self.lock, self.meta],
            args=[self.owner, self.max_items, K.SESSION_TTL, *self.unsaved]))
        if int(res) == -2:
            raise LockLost(self.session_id)
        self.unsaved = []

    async def pop_item(self) -> TResponseInputItem | None:
        self.known = None
        raw = self.unsaved.pop() if self.unsaved else await self._pop("")
        return decode(raw) if raw else None

    async def clear_session(self) -> None:
        self.unsaved, self.known = [], None
        await self._pop("clear")

    async def _pop(self, how: str) -> Any:
        """``POP`` (above): RPOP, or DEL with ``clear``, moving the memory's version on
        (a worker's cached copy is then read again)."""
        pop = self.redis.register_script(POP)  # rare: not kept
        return await self._call(pop(keys=[self.key, self.meta], args=[how]))

    async def _call(self, op: Awaitable[Any]) -> Any:
        try:
            return await op
        except (*REDIS_DOWN, AttributeError) as exc:
            if not is_down(exc):
                raise
            self.outage = True
            raise BusUnavailable() from exc


def _all_plain(items: Items) -> bool:
    """Whether every item is a plain message; the ones found so are counted on ``items``
    (shared with the worker's cache: a session's next turn looks only at its new items)."""
    n = items.plain
    while n < len(items) and plain(items[n]):
        n += 1
    items.plain = n
    return n == len(items)


def _plain(item: Any) -> Any:
    """Items may hold pydantic models; store their JSON form."""
    if hasattr(item, "model_dump"):
        return item.model_dump(exclude_unset=True)
    return item
