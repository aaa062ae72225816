"""The Redis Streams bus: sessions, their logs, turns, delivery to edge nodes.

One class, used by edge nodes and workers alike. Every method maps Redis failures to
:class:`BusUnavailable` so callers can tell clients "retry" instead of crashing.
"""

from __future__ import annotations

import itertools
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

import orjson
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, OutOfMemoryError, ResponseError

from agentia.codes import AgentiaError, BusUnavailable, ErrorCode, SessionLost
from agentia.settings import Common, from_env
from sessions import keys as K
from sessions import scripts
from sessions.redis_client import REDIS_DOWN as REDIS_DOWN
from sessions.redis_client import RedisClient as RedisClient
from sessions.redis_client import connect as connect
from sessions.redis_client import connect_cluster as connect_cluster
from sessions.redis_client import is_cluster_url as is_cluster_url
from sessions.redis_client import is_down as is_down
from sessions.redis_client import stale_map

P = ParamSpec("P")
T = TypeVar("T")


class Forbidden(Exception):
    """The session belongs to another user."""


class Missing(Exception):
    """The session does not exist and the caller did not ask to create it."""


class LockLost(Exception):
    """This worker no longer holds the session's lock: another worker has taken over."""


@dataclass(frozen=True, slots=True)
class SessionInfo:
    epoch: str
    offset: int


@dataclass(frozen=True, slots=True)
class Submitted:
    offset: int
    duplicate: bool


@dataclass(frozen=True, slots=True)
class Turn:
    session: str
    offset: int
    client_id: str
    text: str
    user: str
    source: str
    ts: float
    """When the turn was accepted (unix seconds), for latency metrics."""


@dataclass(frozen=True, slots=True)
class Replay:
    events: list[tuple[int, bytes]]
    recovered: bool
    epoch: str
    offset: int


def frame_for(offset: int, event: bytes) -> bytes:
    """The client frame of a log event: the event JSON with its offset spliced in first."""
    return b'{"offset":%d,%s' % (offset, event[1:])


def _down(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
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
    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


class Bus:
    """``wait_replicas`` > 0: a write a client can see (an ack, an event) is first confirmed
    by that many replicas of its master (WAIT, for up to ``wait_ms``; fewer confirmations
    raise :class:`BusUnavailable`), so a failover cannot take it back. See
    docs/redis-cluster.md for what it costs and what is at risk without it."""

    def __init__(self, redis: RedisClient, *, prefix: str = "agentia", shards: int = 8,
                 log_maxlen: int = K.LOG_MAXLEN, wait_replicas: int | None = None,
                 wait_ms: int | None = None, new_session_ttl: int | None = None) -> None:
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
        self.new_session_ttl: int = new_session_ttl
        """Life of a session until its first turn (AGENTIA_NEW_SESSION_TTL_S)."""
        self.user_keys = K.UserKeys(prefix)
        self.wait_replicas: int = wait_replicas
        self.wait_ms: int = wait_ms
        self._open = redis.register_script(scripts.OPEN)
        self._append = redis.register_script(scripts.APPEND)
        self._submit = redis.register_script(scripts.SUBMIT)
        self._begin = redis.register_script(scripts.BEGIN)
        self._rollback = redis.register_script(scripts.ROLLBACK)
        self._appends = itertools.count(1)
        self._node_checked: dict[bytes, tuple[float, bool]] = {}
        """Edge node -> (when its heartbeat key was checked, whether it existed)."""
        self._acquire = redis.register_script(scripts.ACQUIRE)
        self._renew = redis.register_script(scripts.RENEW)
        self._release = redis.register_script(scripts.RELEASE)
        self._cancel = redis.register_script(scripts.CANCEL)

    async def close(self) -> None:
        await self.redis.aclose()
        if not self.cluster:
            await self.redis.connection_pool.disconnect()

    # ------------------------------------------------------------ replication

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

    # ------------------------------------------------------------ sessions

    def _open_call(self, sid: str, user: str, node: str, create: bool
                   ) -> tuple[list[str], list[Any]]:
        k = self.keys
        return ([k.meta(sid), k.nodes(sid), k.log(sid), k.turns(sid), k.client_ids(sid),
                 k.memory(sid)],
                [user, secrets.token_hex(8), int(time.time()), K.SESSION_TTL, node,
                 self.new_session_ttl, "1" if create else ""])

    @staticmethod
    def _opened(sid: str, res: Any) -> SessionInfo:
        if res[0] == b"forbidden":
            raise Forbidden(sid)
        if res[0] == b"new":
            raise Missing(sid)
        return SessionInfo(res[1].decode(), int(res[2]))

    @_down
    async def open_session(self, sid: str, user: str, node: str = "", *,
                           create: bool = True) -> SessionInfo:
        """Create the session for ``user`` or check that it is theirs; register ``node``.
        With ``create`` False a session that does not exist raises :class:`Missing`. A new
        session lives ``new_session_ttl`` until its first turn."""
        keys, args = self._open_call(sid, user, node, create)
        return self._opened(sid, await self._open(keys=keys, args=args))

    @_down
    async def open_sessions(self, opens: list[tuple[str, str, str, bool]]
                            ) -> list[SessionInfo | BaseException]:
        """Several :meth:`open_session` in one round trip: (sid, user, node, create) each;
        each result is a SessionInfo or the exception that call would have raised. An edge
        batches the handshakes that arrive while a batch is in flight (one write and one read
        instead of one each per handshake). On a Cluster, or without WAIT-free scripts, one
        by one."""
        if len(opens) == 1 or self.cluster or self.wait_replicas:
            return [await self._open_one(*o) for o in opens]
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, user, node, create in opens:
                keys, args = self._open_call(sid, user, node, create)
                pipe.execute_command("EVALSHA", self._open.sha, len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        results: list[SessionInfo | BaseException] = []
        for o, res in zip(opens, replies, strict=True):
            if isinstance(res, NoScriptError):  # a flushed script cache: one by one, loading it
                results.append(await self._open_one(*o))
            elif isinstance(res, OutOfMemoryError):
                results.append(BusUnavailable("Redis is out of memory: retry later"))
            elif isinstance(res, Exception):
                results.append(res)
            else:
                try:
                    results.append(self._opened(o[0], res))
                except (Forbidden, Missing) as exc:
                    results.append(exc)
        return results

    async def _open_one(self, sid: str, user: str, node: str, create: bool
                        ) -> SessionInfo | BaseException:
        try:
            return await self.open_session(sid, user, node, create=create)
        except (Forbidden, Missing, BusUnavailable) as exc:
            return exc

    async def touch_user_session(self, user: str, sid: str) -> None:
        """Remember the session in the user's list (most recent first, bounded)."""
        await self.touch_user_sessions({(user, sid): time.time()})

    @_down
    async def touch_user_sessions(self, seen: dict[tuple[str, str], float]) -> None:
        """Many users' sessions in one round trip (edges batch what their handshakes saw)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for (user, sid), ts in seen.items():
                key = self.keys.user_sessions(user)
                pipe.zadd(key, {sid: ts})
                pipe.zremrangebyrank(key, 0, -K.USER_SESSIONS_KEPT - 1)
                pipe.expire(key, K.SESSION_TTL)
            await pipe.execute()

    @_down
    async def register(self, sid: str, node: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.nodes(sid), node, 1)
            pipe.expire(self.keys.nodes(sid), K.SESSION_TTL)
            await pipe.execute()

    @_down
    async def unregister(self, sid: str, node: str) -> None:
        await self.redis.hdel(self.keys.nodes(sid), node)

    @_down
    async def session_meta(self, sid: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.meta(sid))
        return {a.decode(): b.decode() for a, b in raw.items()}

    # ------------------------------------------------------------ turns in

    @_down
    async def submit(self, sid: str, client_id: str, text: str, *, user: str,
                     source: str = "chat") -> Submitted:
        """Append a user turn durably (log + pending turns + inbound shard), idempotently."""
        k = self.keys
        now = time.time()
        event = orjson.dumps({"type": "user", "id": client_id, "text": text, "source": source,
                              "user": user, "ts": now})
        body = orjson.dumps({"c": client_id, "t": text, "u": user, "s": source, "ts": now})
        res = await self._run_script(
            self._submit,
            keys=[k.meta(sid), k.log(sid), k.turns(sid), k.client_ids(sid), k.nodes(sid)],
            args=[client_id, event, body, self.log_maxlen, K.SESSION_TTL, K.CLIENT_IDS_KEPT,
                  K.MAX_PENDING_TURNS],
        )
        if int(res[0]) == -2:
            raise AgentiaError(ErrorCode.OVERLOADED, "too many turns are waiting in this "
                               "session; wait for the agent to answer", client_id, 2000)
        if int(res[0]) < 0:
            raise SessionLost(client_id)
        offset, dup, done = int(res[0]), bool(res[1]), int(res[2] or 0)
        if not dup:
            await self._fan_out(sid, offset, event, res[3:])
        if not (dup and offset <= done):
            inbound = k.inbound(K.shard_for(sid, self.shards))
            await self._synced(inbound, ("XADD", inbound, "*", "s", sid, "o", offset))
        if not dup:
            # the session now lives SESSION_TTL from this turn: so does its place among the
            # user's live sessions (sessions/opening.py), if it has one
            await self.redis.zadd(self.user_keys.live(user), {sid: int(now) + K.SESSION_TTL},
                                  xx=True, gt=True)
        return Submitted(offset, dup)

    @_down
    async def cancel(self, sid: str, turn: int | None) -> int:
        """Mark a pending or running turn cancelled; returns its offset, or 0 if none."""
        k = self.keys
        got = int(await self._cancel(keys=[k.meta(sid), k.turns(sid)], args=[turn or 0]))
        if got:
            # a Cluster forwards PUBLISH to every node, so a subscriber on any node hears it
            await self.redis.publish(k.cancel_channel(), f"{sid} {got}")
        return got

    @_down
    async def inbound_lag(self, sid: str) -> int:
        """Entries of the session's shard not yet read by the group (for overload checks)."""
        try:
            groups = await self.redis.xinfo_groups(
                self.keys.inbound(K.shard_for(sid, self.shards)))
        except ResponseError:  # the shard does not exist yet: nothing is waiting
            return 0
        for g in groups:
            if g["name"] == K.GROUP.encode():
                return int(g.get("lag") or 0) + int(g.get("pending") or 0)
        return 0

    # ------------------------------------------------------------ events out

    @_down
    async def append(self, sid: str, event: dict[str, Any], *, done: int | None = None,
                     owner: str = "") -> int:
        """Append an event to the session log and deliver it; ``done`` finishes that turn.

        With ``owner`` the write is fenced by the session lock (raises :class:`LockLost`) and
        idempotent: a retry after a dropped connection does not append twice.
        """
        k = self.keys
        raw = orjson.dumps(event)
        append_id = f"{owner}:{next(self._appends)}" if owner else ""
        res = await self._run_script(
            self._append,
            keys=[k.meta(sid), k.log(sid), k.nodes(sid), k.lock(sid), k.turns(sid)],
            args=[raw, self.log_maxlen, K.SESSION_TTL, "" if done is None else done,
                  append_id, owner],
        )
        offset = int(res[0])
        if offset == -2:
            raise LockLost(sid)
        if offset > 0:
            await self._fan_out(sid, offset, raw, res[1:])
        return offset

    @_down
    async def rollback_memory(self, sid: str, turn: int) -> None:
        await self._rollback(keys=[self.keys.memory(sid)], args=[turn])

    async def _fan_out(self, sid: str, offset: int, event: bytes, nodes: list[bytes]) -> None:
        """Copy an event to the delivery stream of each node holding the session. On a
        Cluster a delivery stream may live on a master that is failing over while the log's
        master is fine: the event is safe in the log, and the edge, which cannot read its
        stream either, re-reads the log once it can (gateway/node.py), so this is not an
        error of the append (which would re-run the whole turn)."""
        if not nodes:
            return
        try:
            live = await self._live_nodes(nodes)
            async with self.redis.pipeline(transaction=False) as pipe:
                for node in live:
                    stream = self.keys.delivery(node.decode())
                    pipe.xadd(stream, {"s": sid, "o": offset, "e": event},
                              maxlen=K.DELIVERY_MAXLEN, approximate=True)
                    pipe.expire(stream, K.DELIVERY_TTL)
                if len(live) < len(nodes):
                    # a node that died without draining: stop writing for it (an edge that
                    # was only cut off re-registers on its next heartbeat and catches up)
                    pipe.hdel(self.keys.nodes(sid), *(n for n in nodes if n not in live))
                await pipe.execute()
        except REDIS_DOWN:
            if not self.cluster:
                raise

    async def _live_nodes(self, nodes: list[bytes]) -> list[bytes]:
        """The nodes whose heartbeat key exists, each checked at most every NODE_CHECK_S."""
        now = time.monotonic()
        seen = self._node_checked
        stale = [n for n in nodes if now - seen.get(n, (-1e9, True))[0] > K.NODE_CHECK_S]
        if stale:
            if len(seen) > 10_000:
                seen.clear()
            async with self.redis.pipeline(transaction=False) as pipe:
                for n in stale:
                    pipe.exists(self.keys.node_alive(n.decode()))
                found = await pipe.execute()
            for n, alive in zip(stale, found, strict=True):
                seen[n] = (now, bool(alive))
        return [n for n in nodes if seen[n][1]]

    @_down
    async def replay(self, sid: str, after: int, epoch: str | None,
                     limit: int = 500) -> Replay:
        """Events after ``after`` (up to ``limit``); recovered=False when there is a gap."""
        k = self.keys
        meta = await self.redis.hmget(k.meta(sid), ["epoch", "seq"])
        cur_epoch = (meta[0] or b"").decode()
        cur = int(meta[1] or 0)
        recovered = (epoch is None or epoch == cur_epoch) and after <= cur
        start = after if recovered else 0
        rows = await self.redis.xrange(k.log(sid), f"(0-{start}", "+", count=limit)
        events = [(int(rid.split(b"-")[1]), f[b"e"]) for rid, f in rows]
        if events and events[0][0] != start + 1:
            recovered = False
        return Replay(events, recovered, cur_epoch, cur)

    # ------------------------------------------------------------ edge nodes

    @_down
    async def heartbeat_node(self, node: str) -> bool:
        """Mark ``node`` alive; False when Redis forgot it (restarted without our state)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(k.node_alive(node), b"1", ex=K.NODE_TTL, get=True)
            pipe.zadd(k.nodes_alive(), {node: time.time()})
            pipe.zremrangebyscore(k.nodes_alive(), "-inf", time.time() - K.FORGET_AFTER)
            pipe.expire(k.delivery(node), K.DELIVERY_TTL)
            prev = (await pipe.execute())[0]
        return prev is not None

    @_down
    async def read_delivery(self, node: str, last_id: bytes,
                            block_ms: int = 1000) -> list[tuple[bytes, str, int, bytes]]:
        res = await self.redis.xread({self.keys.delivery(node): last_id}, count=1000,
                                     block=block_ms)
        out: list[tuple[bytes, str, int, bytes]] = []
        for _stream, rows in res or []:
            for rid, f in rows:
                out.append((rid, f[b"s"].decode(), int(f[b"o"]), f[b"e"]))
        return out

    @_down
    async def drop_node(self, node: str) -> None:
        k = self.keys
        await self.redis.delete(k.delivery(node), k.node_alive(node))
        await self.redis.zrem(k.nodes_alive(), node)

    # ------------------------------------------------------------ workers

    @_down
    async def ensure_groups(self) -> None:
        for shard in range(self.shards):
            try:
                await self.redis.xgroup_create(self.keys.inbound(shard), K.GROUP, id="0",
                                               mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    @_down
    async def try_lock(self, sid: str, owner: str, lease_ms: int) -> bool:
        """Take the session's lock (free, or left behind by this same ``owner``)."""
        return bool(await self._acquire(keys=[self.keys.lock(sid)], args=[owner, lease_ms]))

    @_down
    async def renew_lock(self, sid: str, owner: str, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[self.keys.lock(sid)], args=[owner, lease_ms]))

    @_down
    async def release_lock(self, sid: str, owner: str, force: bool = False) -> int:
        """1 released, 0 kept (turns pending), -1 not ours any more."""
        k = self.keys
        return int(await self._release(keys=[k.lock(sid), k.turns(sid)],
                                       args=[owner, "1" if force else ""]))

    @_down
    async def next_turn(self, sid: str) -> Turn | None:
        rows = await self.redis.xrange(self.keys.turns(sid), "-", "+", count=1)
        if not rows:
            return None
        rid, f = rows[0]
        body = orjson.loads(f[b"b"])
        return Turn(sid, int(rid.split(b"-")[1]), body["c"], body["t"], body["u"], body["s"],
                    float(body.get("ts", 0.0)))

    @_down
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

    @asynccontextmanager
    async def cancel_feed(self) -> AsyncIterator[Any]:
        pubsub = self.redis.pubsub()
        await pubsub.subscribe(self.keys.cancel_channel())
        try:
            yield pubsub
        finally:
            await pubsub.aclose()
