"""The agent registry on Redis (:class:`sessions.roles.AgentDirectory`).

Workers publish the agents they run (sessions/registry.py ``describe``) in one hash
(:meth:`sessions.keys.Keys.agents`), each entry stamped ``until`` = now + ``AGENT_TTL`` and
renewed every ``AGENT_RENEW_S``: an agent no worker runs any more drops out within
``AGENT_TTL``. Edges and the control plane read the whole hash (one HGETALL; one key, so one
slot on a Cluster) and keep it ``AGENTS_FRESH_S``. Order: the ``order`` each worker gives (the
agent's place in its configuration), then the name; the first is the default agent.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from sessions import keys as K
from sessions.redis_core import RedisCore, down


class RedisAgentDirectory(RedisCore):
    _agents_read: tuple[float, list[dict[str, Any]]] = (0.0, [])
    """(when read, monotonic; the live entries in order, without ``until``)."""
    _agents_reading: tuple[float, asyncio.Future[list[dict[str, Any]]]] | None = None
    """The read of the registry in flight (when sent, monotonic; its task): callers that
    find the copy stale while it is on its way wait for it instead of sending their own."""

    @down
    async def publish_agents(self, infos: list[dict[str, Any]]) -> None:
        """Register (or renew) the agents this worker runs; drop entries past their time."""
        key, now = self.keys.agents(), time.time()
        stamped = {i["name"]: orjson.dumps({**i, "until": now + K.AGENT_TTL}) for i in infos}
        async with self.redis.pipeline(transaction=False) as pipe:
            if stamped:
                pipe.hset(key, mapping=stamped)
            pipe.hgetall(key)
            pipe.expire(key, K.AGENT_TTL)
            res = await pipe.execute()
        stale = [name for name, raw in res[-2].items() if _until(raw) < now]
        if stale:
            await self.redis.hdel(key, *stale)

    @down
    async def agents(self, fresh: bool = False) -> list[dict[str, Any]]:
        """The live registry in order (``name``, ``description``, ``tools``, ``order``), read
        at most ``AGENTS_FRESH_S`` ago (``fresh``: ``AGENTS_RECHECK_S`` ago)."""
        at, cached = self._agents_read
        now_m = time.monotonic()
        if now_m - at < (K.AGENTS_RECHECK_S if fresh else K.AGENTS_FRESH_S):
            return cached
        reading = self._agents_reading
        if reading is not None and now_m - reading[0] < K.AGENTS_RECHECK_S:
            # a read sent moments ago (by a SUBMIT beside this one): its answer is as fresh
            # as one of our own would be, and costs no round trip (issue 13, session 20)
            return await asyncio.shield(reading[1])
        task = asyncio.ensure_future(self._read_agents())
        task.add_done_callback(_retrieved)  # its callers may all be gone (cancelled)
        self._agents_reading = (now_m, task)
        try:
            return await asyncio.shield(task)
        finally:
            if self._agents_reading is not None and self._agents_reading[1] is task:
                self._agents_reading = None

    async def _read_agents(self) -> list[dict[str, Any]]:
        """One read of the registry (:meth:`agents`), kept as the copy."""
        raw = await self.redis.hgetall(self.keys.agents())
        now = time.time()
        live = [orjson.loads(v) for v in raw.values()]
        live = sorted((i for i in live if float(i.get("until", 0)) >= now),
                      key=lambda i: (int(i.get("order", 0)), str(i.get("name"))))
        for i in live:
            i.pop("until", None)
        self._agents_read = (time.monotonic(), live)
        return live

    async def default_agent(self) -> str:
        """The first registered agent ("" while none is)."""
        live = await self.agents()
        return str(live[0]["name"]) if live else ""

    async def agent_for_new(self, asked: str) -> str:
        """The agent a new session gets: ``asked`` if registered (else ``"-"``: refuse), or
        the default agent when none is asked for ("" while none is registered)."""
        if not asked:
            return await self.default_agent()
        for fresh in (False, True):  # a name we do not know yet may have just been registered
            if any(i["name"] == asked for i in await self.agents(fresh)):
                return asked
        return "-"


def _until(raw: bytes) -> float:
    try:
        return float(orjson.loads(raw).get("until", 0))
    except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
        return 0.0


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a shared read's outcome as seen (each waiting caller gets it raised)."""
    if not task.cancelled():
        task.exception()
