"""What every Redis role implementation shares: the client, the key layout, outage mapping,
and writes confirmed by replicas (WAIT)."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

from agentia.codes import BusUnavailable
from agentia.settings import Common, from_env
from sessions import keys as K
from sessions import scripts, turn_scripts
from sessions import webhook_outbox as W
from sessions.redis_client import REDIS_DOWN, RedisClient, is_down, stale_map

P = ParamSpec("P")
T = TypeVar("T")


def down(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Turn a Redis outage, or a Redis out of memory (maxmemory reached with the
    ``noeviction`` policy: writes refused), into BusUnavailable."""
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except OutOfMemoryError as exc:
            raise BusUnavailable("Redis is out of memory: retry later") from exc
        except (*REDIS_DOWN, AttributeError) as exc:
            if not is_down(exc):
                raise
            raise BusUnavailable() from exc
    return functools.wraps(fn)(wrapper)  # its signature too (loadtest/redis_replay.py reads it)


class RedisCore:
    """``wait_replicas`` > 0: a write a client can see (an ack, an event) is first confirmed
    by that many replicas of its master (WAIT, for up to ``wait_ms``; fewer confirmations
    raise :class:`BusUnavailable`), so a failover cannot take it back. See
    docs/redis-cluster.md for what it costs and what is at risk without it."""

    def __init__(self, redis: RedisClient, *, prefix: str = "agentia", shards: int = 8,
                 log_maxlen: int = K.LOG_MAXLEN, wait_replicas: int | None = None,
                 wait_ms: int | None = None, new_session_ttl: int | None = None,
                 webhook_events: frozenset[str] | None = None,
                 webhook_shards: int | None = None,
                 presence_events: bool | None = None) -> None:
        # redis-py types replies as unions of bytes/str/awaitables whatever the connection's
        # settings; ours always returns bytes (decode_responses=False), decoded explicitly here.
        self.redis: Any = redis
        self.cluster = isinstance(redis, RedisCluster)
        self.keys = K.Keys(prefix, shards)
        self.shards = shards
        self.log_maxlen = log_maxlen
        # not given: AGENTIA_REDIS_WAIT_* (every process kind builds its Bus the same way)
        if wait_replicas is None or wait_ms is None or new_session_ttl is None:
            env = from_env(Common)
            wait_replicas = env.redis_wait_replicas if wait_replicas is None else wait_replicas
            wait_ms = env.redis_wait_ms if wait_ms is None else wait_ms
            new_session_ttl = (env.new_session_ttl_s if new_session_ttl is None
                               else new_session_ttl)
        if webhook_events is None or webhook_shards is None:
            env = from_env(Common)
            webhook_events = env.webhook_types() if webhook_events is None else webhook_events
            webhook_shards = env.webhook_shards if webhook_shards is None else webhook_shards
        self.webhook_events: frozenset[str] = webhook_events
        """Event types copied to the webhook outbox as they are appended (empty: webhooks off,
        AGENTIA_WEBHOOK_URL unset); sessions/webhooks.py."""
        self.webhook_shards: int = webhook_shards
        if presence_events is None:
            presence_events = from_env(Common).presence_events
        self.presence_events: bool = presence_events
        """``presence`` events on (AGENTIA_PRESENCE_EVENTS): sessions/presence_events.py."""
        self.dapr_events: frozenset[str] = from_env(Common).dapr_types()
        """Event types copied to the Dapr outbox as they are appended (empty: off,
        AGENTIA_DAPR_TOPIC_EVENTS unset); sessions/dapr_publish.py."""
        self.outboxes: tuple[W.Outbox, ...] = (
            *([W.webhook_outbox(self.keys, webhook_shards, webhook_events)]
              if webhook_events else []),
            *([W.dapr_outbox(self.keys, self.dapr_events)] if self.dapr_events else []))
        """The outboxes on: each append's fan-out writes them and moves their cursors."""
        self.new_session_ttl: int = new_session_ttl
        """Life of a session until its first turn (AGENTIA_NEW_SESSION_TTL_S)."""
        self.user_keys = K.UserKeys(prefix)
        self.wait_replicas: int = wait_replicas
        self.wait_ms: int = wait_ms
        self._open = redis.register_script(scripts.OPEN)
        self._append = redis.register_script(scripts.APPEND)
        self._submit = redis.register_script(scripts.SUBMIT)
        self._begin = redis.register_script(scripts.BEGIN)
        self._start = redis.register_script(turn_scripts.START)
        self._rollback = redis.register_script(scripts.ROLLBACK)
        self._appends = itertools.count(1)
        self._node_checked: dict[bytes, tuple[float, bool]] = {}
        """Edge node -> (when its heartbeat key was checked, whether it existed)."""
        self._marks = W.Marks()
        """Sessions this process marked for the outboxes' sweepers (sessions/webhook_outbox.py)."""
        self._session_nodes: dict[str, tuple[float, list[bytes]]] = {}
        """Session -> (when, the nodes holding it): what its last append saw."""
        self._readers: dict[str, Any] = {}
        """Node -> the Redis connection its delivery reads use (sessions/delivery_redis.py)."""
        self._deferred: dict[str, Any] = {}
        """Session -> an append kept for its next tick of chunks (sessions/deferred_appends.py);
        one per session at most, so bounded by the turns running."""
        self._endings: dict[str, Any] = {}
        """Session -> its turn's ending, waiting for the worker's next tick of chunks
        (sessions/deferred_appends.py ``_ride_tick``); one per session, bounded as above."""
        self._later: dict[str, tuple[str, int, list[bytes], list[bytes]]] = {}
        """Session -> a fan-out left for its next tick of chunks (sid, first offset, events,
        nodes): an append ``later`` (sessions/log_redis.py); one per session at most, so
        bounded by the turns running."""
        self._acquire = redis.register_script(scripts.ACQUIRE)
        self._renew = redis.register_script(scripts.RENEW)
        self._release = redis.register_script(scripts.RELEASE)
        self._cancel = redis.register_script(scripts.CANCEL)
        self._dead_letter_script = redis.register_script(scripts.DEAD_LETTER)

    async def close(self) -> None:
        await self.redis.aclose()
        if not self.cluster:
            await self.redis.connection_pool.disconnect()

    async def ping(self) -> None:
        """Raises what the client raises when Redis cannot be reached (readiness probes)."""
        await self.redis.ping()

    async def _synced(self, key: str, *commands: tuple[Any, ...]) -> list[Any]:
        """Run ``commands`` (all on ``key``'s slot) in one pipeline, followed by WAIT when
        ``wait_replicas`` is set. WAIT covers the writes of its own connection, so it must
        travel with them: one pipeline, pinned to ``key``'s node on a Cluster (a single
        Redis has one replication stream, so WAIT there covers every earlier write too)."""
        if not self.wait_replicas:
            return [await self.redis.execute_command(*cmd) for cmd in commands]
        for _ in range(2):
            try:
                res = await self._pipeline_and_wait(key, commands)
            except ResponseError as exc:
                if not self.cluster or not stale_map(exc):
                    raise
                # a failover this client did not see: the write was refused (MOVED), and a
                # WAIT sent on its own would go to the wrong node; re-read the map, once
                await self.redis.nodes_manager.initialize()
                continue
            if int(res[-1]) < self.wait_replicas:
                raise BusUnavailable()  # written, not confirmed: the client retries
            return res[:-1]
        raise BusUnavailable()

    async def _pipeline_and_wait(self, key: str, commands: tuple[tuple[Any, ...], ...]
                                 ) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for cmd in commands:
                pipe.execute_command(*cmd)
            if not self.cluster:
                pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms)
                return list(await pipe.execute())
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_ms,
                                 target_nodes=self.redis.get_node_from_key(key))
            return list(await pipe.execute(allow_redirections=False))

    async def _run_script(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """A script, then WAIT on the same connection when ``wait_replicas`` is set."""
        if not self.wait_replicas:
            return await script(keys=keys, args=args)
        cmd = ("EVALSHA", script.sha, len(keys), *keys, *args)
        try:
            return (await self._synced(keys[0], cmd))[0]
        except NoScriptError:  # a new master (failover) or a flushed cache: load, once
            await self.redis.script_load(script.script)
            return (await self._synced(keys[0], cmd))[0]
