"""The turn queue on Redis (:class:`sessions.roles.TurnQueue`): the inbound shards of each
agent, one stream each, read by the consumer group of the workers running that agent. A
claimed entry carries its own ``ack``, ``nack``, ``keep`` and ``dead_letter`` (as arq's jobs
do): receiving is not acknowledging.

Reads and acks raise what the client raises (not :class:`BusUnavailable`): the worker
tells a missing group (NOGROUP) from an outage by the error itself."""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from sessions import keys as K
from sessions.claims_ahead import ClaimsAhead
from sessions.redis_core import RedisCore, down
from sessions.roles import Claimed, Inbound, Turn


@dataclass(frozen=True, slots=True)
class RedisClaim:
    """One inbound entry held in ``consumer``'s pending list until acked."""

    queue: RedisTurnQueue
    stream: str
    id: bytes
    session: str
    consumer: str
    reclaimed: bool
    agent: str = K.DEFAULT_AGENT
    """The agent whose shard the entry is in: the session's agent."""
    offset: int = 0
    """The turn the entry was written for (its ``o``; 0: none said, e.g. a ``nack``'s)."""

    async def ack(self) -> None:
        await self.queue.redis.xack(self.stream, K.GROUP, self.id)

    def ack_command(self) -> tuple[Any, ...]:
        return ("XACK", self.stream, K.GROUP, self.id)

    async def nack(self) -> None:
        # a fresh entry first, then the ack: a crash between them leaves this one pending
        await self.queue.redis.xadd(self.stream, {"s": self.session, "o": 0})
        await self.ack()

    async def keep(self) -> None:
        await self.queue.redis.xclaim(self.stream, K.GROUP, self.consumer, 0, [self.id],
                                      justid=True)

    async def dead_letter(self, turn: Turn, attempts: int, error: str) -> None:
        """The turn's entry in its shard's dead-letter stream, once per turn (a mark in the
        same slot, scripts.DEAD_LETTER): the ending after it may fail on an outage, and the
        worker then dead-letters the turn again."""
        q = self.queue
        shard = K.shard_for(turn.session, q.shards)
        await q._dead_letter_script(
            keys=[q.keys.dead_letters(shard, self.agent),
                  q.keys.dead_lettered(shard, self.agent, turn.session, turn.offset)],
            args=[K.DLQ_MARK_TTL, K.DLQ_MAXLEN, "s", turn.session, "o", turn.offset,
                  "attempts", attempts, "error", error, "text", turn.text,
                  "worker", self.consumer])


class RedisTurnQueue(RedisCore):
    @down
    async def ensure_groups(self, agents: tuple[str, ...] = (K.DEFAULT_AGENT,)) -> None:
        for agent in agents:
            for shard in range(self.shards):
                try:
                    await self.redis.xgroup_create(self.keys.inbound(shard, agent), K.GROUP,
                                                   id="0", mkstream=True)
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise

    async def claim(self, shards: Sequence[Inbound | int], consumer: str, count: int,
                    block_ms: int) -> list[Claimed]:
        """New entries of ``shards`` ((agent, shard) each, a bare number being the
        ``default`` agent's; one XREADGROUP: a Cluster needs one shard per call), up to
        ``count`` from each, waiting up to ``block_ms`` for the first."""
        agent_of = {self.keys.inbound(s, a).encode(): a for a, s in map(_inbound, shards)}
        streams = {stream.decode(): ">" for stream in agent_of}
        res = await self.redis.xreadgroup(K.GROUP, consumer, streams, count=count,
                                          block=block_ms)
        return [RedisClaim(self, stream.decode(), rid, f[b"s"].decode(), consumer, False,
                           agent_of.get(stream, K.DEFAULT_AGENT), _offset(f))
                for stream, rows in res or [] for rid, f in rows]

    def claims_ahead(self, shards: Sequence[Inbound | int], consumer: str,
                     block_ms: int) -> ClaimsAhead | None:
        """A reader of ``shards`` with its reads asked for ahead (sessions/claims_ahead.py);
        None on a Cluster (one shard per read there: :meth:`claim` per shard)."""
        if self.cluster:
            return None
        agent_of = {self.keys.inbound(s, a).encode(): a for a, s in map(_inbound, shards)}
        return ClaimsAhead(self.redis, agent_of, consumer, block_ms,
                           lambda stream, rid, f, agent: RedisClaim(
                               self, stream, rid, f[b"s"].decode(), consumer, False, agent,
                               _offset(f)))

    async def ack_all(self, claims: Sequence[Claimed]) -> None:
        """Ack ``claims`` together: one ``XACK`` per shard (sessions/entry_acks.py), in one
        pipeline on a single Redis (a Cluster: one shard, one slot, a call each)."""
        ids: dict[str, list[bytes]] = {}
        for c in claims:
            ids.setdefault(c.ack_command()[1], []).append(c.id)
        if self.cluster:
            for stream, some in ids.items():
                await self.redis.xack(stream, K.GROUP, *some)
            return
        pipe = self.redis.pipeline(transaction=False)
        for stream, some in ids.items():
            pipe.xack(stream, K.GROUP, *some)
        await pipe.execute()

    async def reclaim(self, shard: Inbound | int, consumer: str, min_idle_ms: int,
                      count: int) -> list[Claimed]:
        """Entries of ``shard`` ((agent, shard), or a number: the ``default`` agent's) whose
        consumer left them idle ``min_idle_ms`` (it died)."""
        agent, k = _inbound(shard)
        stream = self.keys.inbound(k, agent)
        _, rows, _ = await self.redis.xautoclaim(stream, K.GROUP, consumer,
                                                 min_idle_time=min_idle_ms, start_id="0-0",
                                                 count=count)
        return self._reclaimed(stream, agent, consumer, rows)

    def _reclaimed(self, stream: str, agent: str, consumer: str,
                   rows: list[Any]) -> list[Claimed]:
        """The claims of ``XAUTOCLAIM``'s entries (a deleted entry's fields are empty)."""
        return [RedisClaim(self, stream, rid, f[b"s"].decode(), consumer, True, agent,
                           _offset(f))
                for rid, f in rows if f]

    async def reclaim_all(self, shards: Sequence[Inbound | int], consumer: str,
                          min_idle_ms: int, count: int) -> list[Claimed]:
        """:meth:`reclaim` of every shard, at most ``count`` entries each, in one pipeline on
        a single Redis (a Cluster: a call each, one slot per shard). A shard that answers an
        error (no group yet: NOGROUP) gives nothing; a connection error raises."""
        if self.cluster:
            return [c for shard in shards
                    for c in await self.reclaim(shard, consumer, min_idle_ms, count)]
        pipe = self.redis.pipeline(transaction=False)
        streams: list[tuple[str, str]] = []
        for shard in shards:
            agent, k = _inbound(shard)
            streams.append((self.keys.inbound(k, agent), agent))
            pipe.xautoclaim(streams[-1][0], K.GROUP, consumer, min_idle_time=min_idle_ms,
                            start_id="0-0", count=count)
        answers = await pipe.execute(raise_on_error=False)
        return [c for (stream, agent), res in zip(streams, answers, strict=True)
                if not isinstance(res, Exception)
                for c in self._reclaimed(stream, agent, consumer, res[1])]

    async def _group(self, shard: int, agent: str = K.DEFAULT_AGENT) -> dict[Any, Any] | None:
        """The workers' group of ``shard`` (ResponseError: the shard does not exist)."""
        groups = await self.redis.xinfo_groups(self.keys.inbound(shard, agent))
        return next((g for g in groups if g["name"] == K.GROUP.encode()), None)

    async def has_group(self, shard: int = 0, agent: str = K.DEFAULT_AGENT) -> bool:
        return await self._group(shard, agent) is not None

    async def shard_lag(self, shard: int, agent: str = K.DEFAULT_AGENT) -> int | None:
        """Entries of ``agent``'s ``shard`` not yet acked by the group (read or not); None
        without the group. What edges refuse turns on, /metrics exports and KEDA scales
        workers by."""
        g = await self._group(shard, agent)
        return None if g is None else int(g.get("lag") or 0) + int(g.get("pending") or 0)

    @down
    async def shard_lags(self, shards: Collection[Inbound]) -> dict[Inbound, int]:
        """:meth:`shard_lag` of each of ``shards`` ((agent, shard)), 0 for one with no stream
        or group yet: one pipeline on a single Redis (a Cluster: a call each)."""
        order = list(shards)
        if self.cluster:
            answers: list[Any] = []
            for agent, k in order:
                try:
                    answers.append(await self.redis.xinfo_groups(self.keys.inbound(k, agent)))
                except ResponseError as exc:
                    answers.append(exc)
        else:
            pipe = self.redis.pipeline(transaction=False)
            for agent, k in order:
                pipe.xinfo_groups(self.keys.inbound(k, agent))
            answers = await pipe.execute(raise_on_error=False)
        return {shard: _lag_of(groups) for shard, groups in zip(order, answers, strict=True)}

    @down
    async def inbound_lag(self, sid: str, agent: str = K.DEFAULT_AGENT) -> int:
        """:meth:`shard_lag` of the session's shard, 0 if there is nothing yet."""
        try:
            return await self.shard_lag(K.shard_for(sid, self.shards), agent) or 0
        except ResponseError:  # the shard does not exist yet: nothing is waiting
            return 0

    async def worker_alive(self, worker: str) -> None:
        await self.redis.zadd(self.keys.workers_alive(), {worker: time.time()})

    async def count_workers(self, since: float) -> int:
        return int(await self.redis.zcount(self.keys.workers_alive(), since, "+inf"))

    async def maintain(self, agents: tuple[str, ...] = (K.DEFAULT_AGENT,)) -> None:
        """Trim what every worker has finished with from ``agents``' shards; forget dead
        workers. On a single Redis in two pipelines (issue 13, session 20: four round trips
        a shard, 33 every 30 s for 8 shards, were ~0.16 Redis reads a turn at 40 sessions):
        every shard's group and pending summary, then every shard's trim and consumers; the
        floor of each trim is computed from its shard's answers as before. A shard with no
        stream or no group yet is left alone (it stopped the upkeep of the shards after it)."""
        r, keys = self.redis, self.keys
        shards = [keys.inbound(k, a) for a in agents for k in range(self.shards)]
        if self.cluster:  # the shards are other slots, maybe other masters: one at a time
            await r.zremrangebyscore(keys.workers_alive(), "-inf", time.time() - K.FORGET_AFTER)
            for stream in shards:
                try:
                    groups, pending = await r.xinfo_groups(stream), None
                    if _workers_group(groups) is not None:
                        pending = await r.xpending(stream, K.GROUP)
                except ResponseError:
                    continue
                floor = _floor(groups, pending)
                if floor is not None:
                    await r.xtrim(stream, minid=floor, approximate=True)
                    await self._forget_consumers(stream, await r.xinfo_consumers(stream, K.GROUP))
            return
        pipe = r.pipeline(transaction=False)
        pipe.zremrangebyscore(keys.workers_alive(), "-inf", time.time() - K.FORGET_AFTER)
        for stream in shards:
            pipe.xinfo_groups(stream)
            pipe.xpending(stream, K.GROUP)
        got = (await pipe.execute(raise_on_error=False))[1:]
        floors = [(stream, _floor(got[2 * i], got[2 * i + 1]))
                  for i, stream in enumerate(shards)]
        floors = [(stream, floor) for stream, floor in floors if floor is not None]
        if not floors:
            return
        pipe = r.pipeline(transaction=False)
        for stream, floor in floors:
            pipe.xtrim(stream, minid=floor, approximate=True)
            pipe.xinfo_consumers(stream, K.GROUP)
        got = await pipe.execute(raise_on_error=False)
        for i, (stream, _) in enumerate(floors):
            if not isinstance(got[2 * i + 1], Exception):
                await self._forget_consumers(stream, got[2 * i + 1])

    async def _forget_consumers(self, stream: str, consumers: Any) -> None:
        """Delete the consumers of ``stream``'s group idle past ``FORGET_AFTER`` with nothing
        pending (a worker gone for a day)."""
        for c in consumers:
            if c["pending"] == 0 and c["idle"] > K.FORGET_AFTER * 1000:
                await self.redis.xgroup_delconsumer(stream, K.GROUP, c["name"])


def _workers_group(groups: Any) -> dict[Any, Any] | None:
    """The workers' group in an ``XINFO GROUPS`` answer (None: none yet, or an error)."""
    if isinstance(groups, Exception):
        return None
    return next((g for g in groups if g["name"] == K.GROUP.encode()), None)


def _floor(groups: Any, pending: Any) -> bytes | None:
    """The id below which a shard's entries are finished with: its group's last delivered
    id, or its oldest pending entry's if older; None without the group."""
    group = _workers_group(groups)
    if group is None or isinstance(pending, Exception) or pending is None:
        return None
    floor: bytes = group["last-delivered-id"]
    if pending["pending"]:
        floor = min(floor, pending["min"], key=_stream_id)
    return floor


def _offset(fields: dict[bytes, bytes]) -> int:
    """The turn an inbound entry names (``o``), 0 when it names none or is not a number."""
    raw = fields.get(b"o", b"0")
    return int(raw) if raw.isdigit() else 0


def _lag_of(groups: Any) -> int:
    """Unread + pending of the workers' group in an ``XINFO GROUPS`` answer (an error: the
    shard does not exist yet; no group: nothing read yet; both 0)."""
    if isinstance(groups, Exception):
        if isinstance(groups, ResponseError):
            return 0
        raise groups
    g = next((g for g in groups if g["name"] == K.GROUP.encode()), None)
    return 0 if g is None else int(g.get("lag") or 0) + int(g.get("pending") or 0)


def _inbound(shard: Inbound | int) -> Inbound:
    return (K.DEFAULT_AGENT, shard) if isinstance(shard, int) else shard


def _stream_id(rid: bytes) -> tuple[int, int]:
    ms, _, seq = rid.partition(b"-")
    return int(ms), int(seq or 0)
