"""A session's turns as a worker runs them, on Redis (:class:`sessions.roles.TurnState`):
the session lock (leased, fenced), the pending turns, counted attempts, cancellations."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from sessions import scripts
from sessions.redis_core import RedisCore, down
from sessions.roles import LockLost, Turn

if TYPE_CHECKING:
    from sessions.memory import RedisMemory


class RedisTurnState(RedisCore):
    _remember: Any = None

    @down
    async def try_lock(self, sid: str, owner: str, lease_ms: int) -> bool:
        """Take the session's lock (free, or left behind by this same ``owner``)."""
        return bool(await self._acquire(keys=[self.keys.lock(sid), self.keys.meta(sid)],
                                        args=[owner, lease_ms]))

    @down
    async def renew_lock(self, sid: str, owner: str, lease_ms: int) -> bool:
        """EVALSHA sent directly, without redis-py's ``AsyncScript.__call__`` (its imports,
        client checks and argument copies on every call; this runs every third of a lease for
        every session a worker holds): 207 -> 188 Python calls a renewal. Loaded on NOSCRIPT."""
        script, key = self._renew, self.keys.lock(sid)
        try:
            res = await self.redis.execute_command("EVALSHA", script.sha, 1, key, owner,
                                                   lease_ms)
        except NoScriptError:  # a new master (failover) or a flushed cache: load, once
            await self.redis.script_load(script.script)
            res = await self.redis.execute_command("EVALSHA", script.sha, 1, key, owner,
                                                   lease_ms)
        return bool(res)

    async def preload_scripts(self) -> int:
        """SCRIPT LOAD every script this bus runs, once (a worker's start): else every
        concurrent first call of a script on a fresh worker (or Redis) meets NOSCRIPT and
        loads it again. Returns how many were loaded."""
        self.memory_script()
        loaded = {v.sha: v for v in vars(self).values() if isinstance(v, AsyncScript)}
        for script in loaded.values():
            await self.redis.script_load(script.script)
        return len(loaded)

    @down
    async def release_lock(self, sid: str, owner: str, force: bool = False) -> int:
        """1 released, 0 kept (turns pending), -1 not ours any more."""
        k = self.keys
        return int(await self._release(keys=[k.lock(sid), k.turns(sid)],
                                       args=[owner, "1" if force else ""]))

    @down
    async def next_turn(self, sid: str) -> Turn | None:
        rows = await self.redis.xrange(self.keys.turns(sid), "-", "+", count=1)
        if not rows:
            return None
        rid, f = rows[0]
        return turn_of(sid, rid, f[b"b"])

    @down
    async def begin_attempt(self, sid: str, turn: int, owner: str,
                            again: bool = False) -> tuple[int, bool]:
        """Count an attempt of ``turn``; returns (attempt number, cancelled already). With
        ``again`` (the previous attempt met a Redis outage) an attempt already counted is
        reused: an outage is not the turn's failure, and must not dead-letter it."""
        k = self.keys
        res = await self._begin(keys=[k.meta(sid), k.memory(sid), k.lock(sid)],
                                args=[turn, owner, "1" if again else ""])
        if int(res[0]) == -2:
            raise LockLost(sid)
        return int(res[0]), bool(res[1])

    @down
    async def rollback_memory(self, sid: str, turn: int) -> None:
        await self._rollback(keys=[self.keys.memory(sid), self.keys.meta(sid)], args=[turn])

    def memory(self, sid: str, turn: int, owner: str) -> RedisMemory:
        """The agent's memory of the session for one attempt of ``turn`` (fenced by the lock).
        Imported here: it needs the Agents SDK, which only workers load."""
        from sessions.memory import RedisMemory

        return RedisMemory(self.redis, self.keys, sid, turn, owner=owner,
                           remember=self.memory_script())

    def memory_script(self) -> Any:
        """REMEMBER: one Script object (its SHA1 computed once), not one per turn."""
        if self._remember is None:
            self._remember = self.redis.register_script(scripts.REMEMBER)
        return self._remember

    @asynccontextmanager
    async def cancel_feed(self) -> AsyncIterator[AsyncIterator[str]]:
        """Cancellations as they are published ("<session> <turn>"), while inside."""
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.keys.cancel_channel())
        try:
            yield _messages(pubsub)
        finally:
            await pubsub.aclose()


async def _messages(pubsub: Any) -> AsyncIterator[str]:
    async for msg in pubsub.listen():
        if msg.get("type") == "message":
            yield msg["data"].decode()


def turn_of(sid: str, rid: bytes, raw: bytes) -> Turn:
    """The pending turn of entry ``rid`` (``0-<offset>``) of ``sid``'s turns, body ``raw``."""
    body = orjson.loads(raw)
    return Turn(sid, int(rid.split(b"-")[1]), body["c"], body["t"], body["u"], body["s"],
                float(body.get("ts", 0.0)), tp=body.get("tp", ""))
