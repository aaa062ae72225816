"""Deployment-wide limits per user, checked when an edge opens a connection or a session.

The limits live in Redis, so every edge enforces the same ones (an edge's own per-user cap
only bounds what one process holds). Each check is one Lua script on the user's slot
(``{u.<user>}``, sessions/keys.py), so it is atomic on a single Redis and on a Cluster:

* **connections** (``AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL``): each connection holds a lease
  in the user's set, renewed by its edge every ``CONN_LEASE_S / 3``; an edge that dies
  without draining stops renewing, and its entries expire after ``CONN_LEASE_S``.
* **sessions created per hour** (``AGENTIA_MAX_SESSIONS_PER_HOUR``), sliding window.
* **live sessions** (``AGENTIA_MAX_SESSIONS_PER_USER``): created sessions, scored by when they
  expire (``AGENTIA_NEW_SESSION_TTL_S`` until their first turn, ``SESSION_TTL`` from each turn).

A refusal is a :class:`Refused` carrying the close code the edge sends. Every script does a
memory-growing write (ZADD) before any other write, so a Redis at ``maxmemory`` with
``noeviction`` refuses it whole (Redis checks memory at a script's first write): that, like
an outage, is :class:`~agentia.codes.BusUnavailable`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, OutOfMemoryError

from agentia.codes import BusUnavailable, CloseCode
from sessions import keys as K
from sessions.redis_client import REDIS_DOWN, RedisClient, is_down

# KEYS: conns; ARGV: member, now ms, lease end ms, max (0 = none), key ttl s
# 1 leased (or renewed), 0 refused. Expired leases (their edge died) do not count.
LEASE = """
local now = tonumber(ARGV[2])
local max = tonumber(ARGV[4])
local mine = redis.call('ZSCORE', KEYS[1], ARGV[1])
if max > 0 and not (mine and tonumber(mine) > now)
   and redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf') >= max then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 1
"""

# KEYS: new, live; ARGV: session, now s, max per window (0 = none), max live (0 = none),
# expiry of the new session (s), window s, live key ttl s
# 'ok' counted, 'rate' too many created in the window, 'live' too many live sessions. A session
# already counted (two edges opening the same new id at once) is not counted twice.
RESERVE = """
local now, sid = tonumber(ARGV[2]), ARGV[1]
local per_window, max_live = tonumber(ARGV[3]), tonumber(ARGV[4])
local known = redis.call('ZSCORE', KEYS[2], sid)
if known and tonumber(known) > now then return 'ok' end
if per_window > 0
   and redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[6]), '+inf') >= per_window then
  return 'rate'
end
if max_live > 0 and redis.call('ZCOUNT', KEYS[2], '(' .. now, '+inf') >= max_live then
  return 'live'
end
redis.call('ZADD', KEYS[2], ARGV[5], sid)
redis.call('ZADD', KEYS[1], now, sid)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[6]))
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[7])
return 'ok'
"""


class Refused(Exception):
    """A per-user limit refuses the connection; ``code`` and ``reason`` go in the close frame,
    ``tally`` names the edge's handshake counter (agentia/metrics.py)."""

    def __init__(self, code: CloseCode, reason: str, tally: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.tally = tally


TOO_MANY_CONNECTIONS = (CloseCode.TOO_MANY_CONNECTIONS,
                        "too many connections for this user: reconnect later",
                        "refused_user_total")
_SESSION_REFUSALS = {
    b"rate": (CloseCode.NEW_SESSIONS_RATE,
              "too many new sessions for this user this hour: retry later",
              "refused_new_sessions"),
    b"live": (CloseCode.TOO_MANY_SESSIONS,
              "too many live sessions for this user", "refused_user_sessions"),
}


def unavailable(exc: BaseException) -> BaseException:
    """What a failed Redis call means to a caller: an outage or a Redis out of memory is
    :class:`BusUnavailable` (retry); anything else is itself (a bug)."""
    if isinstance(exc, OutOfMemoryError):
        return BusUnavailable("Redis is out of memory: retry later")
    if is_down(exc):
        return BusUnavailable()
    return exc


@dataclass(frozen=True, slots=True)
class Limits:
    """0 turns a limit off."""

    connections: int = 100
    sessions_per_hour: int = 200
    sessions: int = 1000
    new_session_ttl: int = K.NEW_SESSION_TTL


class UserLimits:
    """The per-user limits of one deployment (one Redis, one key prefix)."""

    def __init__(self, redis: RedisClient, prefix: str, limits: Limits) -> None:
        self.redis: Any = redis
        self.keys = K.UserKeys(prefix)
        self.limits = limits
        self.cluster = isinstance(redis, RedisCluster)
        self._lease = redis.register_script(LEASE)
        self._reserve = redis.register_script(RESERVE)

    async def lease(self, conns: list[tuple[str, str]]) -> list[bool | BaseException]:
        """Take a lease for each (user, connection id): True, False over the limit, or the
        error (BusUnavailable when Redis is down or full)."""
        now = time.time()
        calls = [([self.keys.conns(user)],
                  [member, int(now * 1000), int((now + K.CONN_LEASE_S) * 1000),
                   self.limits.connections, K.CONN_LEASE_S])
                 for user, member in conns]
        return [r if isinstance(r, BaseException) else bool(r)
                for r in await self._eval_many(self._lease, calls)]

    async def reserve(self, opens: list[tuple[str, str]]) -> list[BaseException | None]:
        """Count a new session for each (user, session): None when allowed, else the
        :class:`Refused` to raise (or the Redis error)."""
        lim, now = self.limits, int(time.time())
        if not lim.sessions_per_hour and not lim.sessions:
            return [None] * len(opens)
        calls = [([self.keys.new(user), self.keys.live(user)],
                  [sid, now, lim.sessions_per_hour, lim.sessions, now + lim.new_session_ttl,
                   K.NEW_SESSIONS_WINDOW_S, K.SESSION_TTL])
                 for user, sid in opens]
        out: list[BaseException | None] = []
        for r in await self._eval_many(self._reserve, calls):
            if isinstance(r, BaseException):
                out.append(r)
            else:
                refusal = _SESSION_REFUSALS.get(r)
                out.append(Refused(*refusal) if refusal else None)
        return out

    async def release(self, conns: list[tuple[str, str]]) -> None:
        """Drop the leases of connections that ended (one round trip)."""
        await self._pipelined([("ZREM", self.keys.conns(user), member)
                               for user, member in conns])

    async def renew(self, conns: dict[str, list[str]], chunk: int = 1000) -> None:
        """Extend the leases of every live connection of this edge, per user; pipelines of
        ``chunk`` users (100,000 connections every 20 s: ~5,000 members a second). A lease
        Redis lost (a restart, an outage longer than the lease) is taken again."""
        end = int((time.time() + K.CONN_LEASE_S) * 1000)
        cmds: list[tuple[Any, ...]] = []
        for user, members in conns.items():
            key = self.keys.conns(user)
            cmds.append(("ZADD", key, "GT", *(x for m in members for x in (end, m))))
            cmds.append(("EXPIRE", key, K.CONN_LEASE_S))
            if len(cmds) >= 2 * chunk:
                await self._pipelined(cmds)
                cmds = []
        if cmds:
            await self._pipelined(cmds)

    async def _pipelined(self, cmds: list[tuple[Any, ...]]) -> None:
        if not cmds:
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for cmd in cmds:
                    pipe.execute_command(*cmd)
                await pipe.execute()
        except Exception as exc:
            raise unavailable(exc) from exc

    async def _eval_many(self, script: Any, calls: list[tuple[list[str], list[Any]]]
                         ) -> list[Any]:
        """Run ``script`` once per (keys, args): one pipeline on a single Redis, one call
        each on a Cluster (the keys of different users live on different nodes). Each result
        is the reply or the mapped error (:func:`unavailable`)."""
        if len(calls) > 1 and not self.cluster:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for keys, args in calls:
                        pipe.execute_command("EVALSHA", script.sha, len(keys), *keys, *args)
                    replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:
                return [unavailable(exc)] * len(calls)
            if not any(isinstance(r, NoScriptError) for r in replies):
                return [unavailable(r) if isinstance(r, BaseException) else r for r in replies]
        out: list[Any] = []
        for keys, args in calls:  # a lone call, a Cluster, or a flushed script cache
            try:
                out.append(await script(keys=keys, args=args))
            except (*REDIS_DOWN, OutOfMemoryError, AttributeError) as exc:
                out.append(unavailable(exc))
        return out


A = TypeVar("A")
R = TypeVar("R")


class Batcher(Generic[A, R]):
    """Calls of one kind batched into one Redis round trip: the calls that arrive while a
    batch is in Redis go together in the next one (a storm of handshakes costs a round trip
    per batch, not per handshake; a lone call waits for nobody). ``run`` takes the items and
    returns one result or exception per item."""

    def __init__(self, run: Callable[[list[A]], Awaitable[list[R | BaseException]]],
                 size: int = 256) -> None:
        self.run = run
        self.size = size
        self._queue: list[tuple[A, asyncio.Future[R]]] = []
        self._task: asyncio.Task[None] | None = None

    async def __call__(self, item: A) -> R:
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, fut))
        if self._task is None:
            self._task = asyncio.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue[:self.size], self._queue[self.size:]
                try:
                    results = await self.run([item for item, _ in batch])
                except Exception as exc:
                    results = [exc] * len(batch)
                for (_, fut), res in zip(batch, results, strict=True):
                    if fut.done():
                        continue
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)
        finally:
            self._task = None
