"""Node delivery on Redis (:class:`sessions.roles.NodeDelivery`): each node (an edge, a voice
call) has a heartbeat key and a delivery stream; a session's nodes hash says which nodes hold
it, and appends copy their events to those nodes' streams."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import orjson
from redis.exceptions import ResponseError

from sessions import delivery_reads as R
from sessions import keys as K
from sessions import webhook_outbox as W
from sessions.delivery_entries import delivered
from sessions.redis_client import REDIS_DOWN
from sessions.redis_core import RedisCore, down
from sessions.roles import Delivered

_FAULT = os.environ.get("AGENTIA_TEST_FAULT", "").partition("kill-before-fanout:")
KILL_BEFORE_FANOUT = _FAULT[2] if not _FAULT[0] else ""
"""Tests only (tests/e2e/test_webhooks.py): ``AGENTIA_TEST_FAULT=kill-before-fanout:<type>``
kills this process (SIGKILL) when it is about to fan out an event of that type, i.e. right
after the log append. Unset in production: one falsy check per fan-out."""

FRAME = b"frame"
"""The notice (field ``x``) of an off-log frame for a session's clients (field ``f``): a
node that does not know it ignores it (sessions/membership.py), as any newer notice."""
FRAME_MAX = 8_192
"""Bytes of one off-log frame, at most: a longer one is not sent (:meth:`stream_frame`)."""

READERS_KEPT = 4
"""Delivery readers whose Redis connection is kept out of the pool, with their reads asked for
ahead (sessions/delivery_reads.py; one per node read from this client: one in an edge or a
voice call); past them a node reads with one ``XREAD`` at a time. Session 12 built them and
turned them off (0) before its stop: a burst of large events to one session then closed a
reader that keeps up as SLOW in about half the unpaced runs of
``test_slow_reader_is_closed_and_others_are_unaffected``. The cause was the edge's send budget,
not the reads: a burst that comes in one read is handed to the connections in one pass of the
loop, before any client can read, and each event was counted against the budget as it was
queued (one ``XREAD`` at a time did it too, less often). Since session 13 an event over the
budget is left to the log and filled at the pace the client reads (gateway/connection.py
``on_live``), and the reads ahead are on again. ``AGENTIA_DELIVERY_READS_AHEAD=false`` turns
them off for an edge (:attr:`RedisNodeDelivery.readers_kept`)."""


class RedisNodeDelivery(RedisCore):
    readers_kept: int | None = None
    """This client's :data:`READERS_KEPT` (None: the module's; 0: reads ahead off, an edge's
    ``AGENTIA_DELIVERY_READS_AHEAD=false``)."""

    @down
    async def register(self, sid: str, node: str) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hset(self.keys.nodes(sid), node, 1)
            pipe.expire(self.keys.nodes(sid), K.SESSION_TTL)
            await pipe.execute()

    @down
    async def unregister(self, sid: str, node: str) -> None:
        await self.redis.hdel(self.keys.nodes(sid), node)

    @down
    async def heartbeat_node(self, node: str) -> bool:
        """Mark ``node`` alive; False when Redis forgot it (restarted without our state).
        This client then knows ``node`` alive as of now, as an ``EXISTS`` of its heartbeat
        key would have told it (:meth:`_live_nodes`): the node's own appends (an edge's
        ``SUBMIT``) keep their fan-out in the script without that check's round trip
        (issue 13, session 20)."""
        k = self.keys
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(k.node_alive(node), b"1", ex=K.NODE_TTL, get=True)
            pipe.zadd(k.nodes_alive(), {node: time.time()})
            pipe.zremrangebyscore(k.nodes_alive(), "-inf", time.time() - K.FORGET_AFTER)
            pipe.expire(k.delivery(node), K.DELIVERY_TTL)
            prev = (await pipe.execute())[0]
        if len(self._node_checked) > 10_000:
            self._node_checked.clear()
        self._node_checked[node.encode()] = (time.monotonic(), True)
        return prev is not None

    def reads_ahead(self, node: str) -> bool:
        """Whether ``node``'s reads are asked for ahead on a kept reader (no linger then)."""
        return node in self._readers

    @down
    async def read_delivery(self, node: str, last_id: bytes,
                            block_ms: int = 1000) -> list[Delivered]:
        key = self.keys.delivery(node)
        kept = READERS_KEPT if self.readers_kept is None else self.readers_kept
        if self.cluster or (node not in self._readers and len(self._readers) >= kept):
            # a Cluster, or more nodes read from this client than it keeps readers for (tests,
            # tools): one XREAD at a time on a pool connection
            res = await self.redis.xread({key: last_id}, count=1000, block=block_ms)
            return [d for _stream, rows in res or [] for rid, f in rows
                    for d in delivered(rid, f)]
        raw = await self._read_ahead(node, key, last_id, block_ms)
        if not raw:
            return []
        # RESP3 answers {stream: entries}, RESP2 [[stream, entries]]; an entry is
        # [id, [field, value, ...]]
        streams = raw.values() if isinstance(raw, dict) else (pair[1] for pair in raw)
        out = [d for rows in streams for rid, flat in rows
               for d in delivered(rid, dict(zip(flat[::2], flat[1::2], strict=True)))]
        ahead = self._readers.get(node)
        if out and ahead is not None:
            ahead.after = out[-1].id
        return out

    async def _read_ahead(self, node: str, key: str, last_id: bytes, block_ms: int) -> Any:
        """The next read of ``node``'s stream after ``last_id``, its reply unparsed, on a
        connection kept for this node's reader with reads asked for ahead
        (sessions/delivery_reads.py: a wake-up of Redis fewer per tick). The pool's checkout
        and release, redis-py's reply parsing and its per-command observability hooks cost
        the edge more than the rest of a frame's delivery when events come a few per read
        (loadtest/bench_peer.py --agentia-feed chunk). A dropped connection is re-made and
        the reads started again from ``last_id`` under the pool's retry policy, as any
        command; a read cut short (cancelled, timed out) or refused drops the connection with
        the reads on it, so a late reply is never taken for another's and nothing the caller
        did not get is skipped."""
        ahead = self._readers.get(node)
        if ahead is not None and (ahead.after != last_id or ahead.block_ms != block_ms):
            await self._drop_reader(node)
            ahead = None
        if ahead is None:
            conn = await self.redis.connection_pool.get_connection()
            ahead = self._readers[node] = R.Ahead(conn, last_id, block_ms)
        kept = ahead

        async def once() -> Any:
            for _ in range(2):
                if not kept.started:  # the group at what the caller was last given
                    await R.start(kept.conn, key, kept.after)
                    kept.started = True
                try:
                    return await R.read_one(kept, key)
                except ResponseError as exc:
                    if not R.gone(exc):
                        raise
                    # the stream was deleted (its node dropped, Redis forgot it): again
                    await dropped(exc)
            return None

        async def dropped(_err: BaseException) -> None:
            kept.pending, kept.started = 0, False
            await kept.conn.disconnect()

        try:
            return await kept.conn.retry.call_with_retry(once, dropped)
        except BaseException:
            await self._drop_reader(node)
            raise

    async def _drop_reader(self, node: str) -> None:
        """Forget ``node``'s reader connection and every read in flight on it."""
        ahead = self._readers.pop(node, None)
        if ahead is not None:
            await ahead.conn.disconnect()
            await self.redis.connection_pool.release(ahead.conn)

    @down
    async def stream_frame(self, sid: str, frame: bytes, but: str = "") -> bool:
        """An off-log frame for the clients of ``sid`` (docs/protocol.md, interim
        ``transcript``): to the delivery stream of each live node holding the session but
        ``but`` (the sender's own), in one pipeline, never in the log, so a client that
        resumes does not get it. Returns False when it was not sent (over
        :data:`FRAME_MAX`). The nodes are known from the session's appends, re-read at most
        every ``NODES_FRESH_S``."""
        if len(frame) > FRAME_MAX:
            return False
        nodes = [n for n in (await self._nodes_of_many([sid]))[sid] if n != but.encode()]
        live = await self._live_nodes(nodes) if nodes else []
        if not live:
            return True
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for node in live:
                    pipe.xadd(self.keys.delivery(node.decode()),
                              {"s": sid, "x": FRAME, "f": frame},
                              maxlen=K.DELIVERY_MAXLEN, approximate=True)
                await pipe.execute()
        except REDIS_DOWN:
            if not self.cluster:  # on a Cluster, see _fan_out_all
                raise
        return True

    @down
    async def drop_node(self, node: str) -> None:
        k = self.keys
        await self.redis.delete(k.delivery(node), k.node_alive(node))
        await self.redis.zrem(k.nodes_alive(), node)

    async def live_nodes(self, since: float) -> list[str]:
        """Nodes that heartbeat since ``since`` (unix seconds); raises what the client raises."""
        rows = await self.redis.zrangebyscore(self.keys.nodes_alive(), since, "+inf")
        return [n.decode() for n in rows]

    async def _nodes_of_many(self, sids: list[str]) -> dict[str, list[bytes]]:
        """The nodes holding each of ``sids``, as its last append saw them if that is recent
        enough (``NODES_FRESH_S``); the stale ones re-read in one pipeline. With one round trip
        each, a tick of 200 turns streaming for longer than ``NODES_FRESH_S``
        waited 200 round trips in a row, each behind the worker's busy event loop: seconds
        per tick, every turn's first text held behind it (bench_worker's 200-stream stall)."""
        now = time.monotonic()
        out: dict[str, list[bytes]] = {}
        stale = []
        for sid in sids:
            hit = self._session_nodes.get(sid)
            if hit is not None and now - hit[0] <= K.NODES_FRESH_S:
                out[sid] = hit[1]
            else:
                stale.append(sid)
        if stale:
            async with self.redis.pipeline(transaction=False) as pipe:
                for sid in stale:
                    pipe.hkeys(self.keys.nodes(sid))
                found = await pipe.execute()
            for sid, nodes in zip(stale, found, strict=True):
                out[sid] = list(nodes)
                self._remember_nodes(sid, out[sid], now)
        return out

    async def _nodes_for_tick(self, sids: list[str]
                              ) -> tuple[dict[str, list[bytes]], list[str]]:
        """The nodes of each of ``sids`` for a tick of chunks, and the sessions whose view is
        older than ``NODES_FRESH_S``: those are sent to their last known nodes this tick and
        re-read (``HKEYS``) in the tick's own pipeline for the next one
        (:meth:`_renew_nodes`), not in a round trip before it. A session never seen is read
        now. Before issue 13's session 11 the stale ones cost a round trip of their own, and
        with turns started at different moments most ticks had one: a read, a reply and a
        wake-up of Redis more per tick (loadtest/bench_turnpath.py ``redis_reads_per_turn``).
        """
        now = time.monotonic()
        out: dict[str, list[bytes]] = {}
        stale, unknown = [], []
        for sid in sids:
            hit = self._session_nodes.get(sid)
            if hit is None:
                unknown.append(sid)
                continue
            out[sid] = hit[1]
            if now - hit[0] > K.NODES_FRESH_S:
                stale.append(sid)
        if unknown:
            out.update(await self._nodes_of_many(unknown))
        return out, stale

    def _renew_nodes(self, stale: list[str], found: list[Any]) -> None:
        """What the tick's ``HKEYS`` of ``stale`` sessions answered (:meth:`_nodes_for_tick`)."""
        now = time.monotonic()
        for sid, nodes in zip(stale, found, strict=True):
            self._remember_nodes(sid, list(nodes), now)

    async def _fan_out_later(self, sid: str, first: int, events: list[bytes],
                             nodes: list[bytes]) -> None:
        """:meth:`_fan_out_all`, left for the session's next tick of chunks when it can be
        (log_redis.stream_chunks puts it first in that pipeline, before the chunks): the
        ``speaking`` state, appended just before the text it announces, reaches the nodes with
        that text, one round trip and one wake-up of each node's reader fewer per turn. Sent
        at once when an outbox is on (its cursor follows each fan-out) or a test fault is set;
        any other fan-out of the session sends it first (order holds)."""
        if self.outboxes or KILL_BEFORE_FANOUT or not nodes:
            await self._fan_out_all(sid, first, events, nodes)
            return
        if sid in self._later:
            await self._fan_out_all(*self._later.pop(sid))
        self._remember_nodes(sid, nodes, time.monotonic())
        self._later[sid] = (sid, first, events, nodes)

    def _inline_targets(self, sid: str) -> list[bytes] | None:
        """The nodes an append of ``sid`` may copy its events to inside its own script (a
        round trip fewer, sessions/scripts.py ``APPEND``): the session's nodes as last seen,
        each known alive within ``NODE_CHECK_S``. None when the fan-out must be the caller's:
        on a Cluster (other slots), with WAIT (the ack waits for the replicas), an outbox
        (its cursor follows each fan-out), a test fault, a fan-out left for the next tick (it
        goes first), or a node whose liveness is not known. A node the script finds that is
        not among these gets the caller's fan-out after it, as before."""
        if self.cluster or self.wait_replicas or self.outboxes or KILL_BEFORE_FANOUT \
                or sid in self._later:
            return None
        hit = self._session_nodes.get(sid)
        if hit is None:
            return None
        now = time.monotonic()
        out = []
        for n in hit[1]:
            seen = self._node_checked.get(n)
            if seen is None or now - seen[0] > K.NODE_CHECK_S:
                return None
            if seen[1]:
                out.append(n)
        return out

    def _remember_nodes(self, sid: str, nodes: list[bytes], now: float) -> None:
        if len(self._session_nodes) > 10_000:
            self._session_nodes.clear()
        self._session_nodes[sid] = (now, nodes)

    async def _fan_out(self, sid: str, offset: int, event: bytes, nodes: list[bytes]) -> None:
        """:meth:`_fan_out_all` of one event."""
        await self._fan_out_all(sid, offset, [event], nodes)

    async def _fan_out_all(self, sid: str, first: int, events: list[bytes],
                           nodes: list[bytes], then: list[tuple[Any, ...]] | None = None
                           ) -> None:
        """Copy events (at offsets ``first``, ``first + 1``, ...) to the delivery stream of
        each node holding the session, in one pipeline (``then``: commands run at its end, in
        the same round trip; a single Redis only, where a failure here is the caller's). On a
        Cluster a delivery stream may live on a master that is failing over while the log's
        master is fine: the event is safe in the log, and the edge, which cannot read its
        stream either, re-reads the log once it can (sessions/membership.py), so this is not
        an error of the append (which would re-run the whole turn). With webhooks or Dapr
        publishing on, the events of their types go to their outbox in the same pipeline and
        the session's cursors follow them (sessions/webhook_outbox.py); an outbox write lost
        here is re-queued by the dispatcher's or the publisher's sweeper."""
        if KILL_BEFORE_FANOUT and any(orjson.loads(e).get("type") == KILL_BEFORE_FANOUT
                                      for e in events):
            os.kill(os.getpid(), signal.SIGKILL)
        if self._later and sid in self._later:  # the session's earlier events go out first
            await self._fan_out_all(*self._later.pop(sid))
        self._remember_nodes(sid, nodes, time.monotonic())
        pairs = list(enumerate(events, first))
        hooks = [entry for o in self.outboxes for entry in o.entries(sid, pairs)]
        if not nodes and not self.outboxes and not then:
            return
        last = first + len(events) - 1
        try:
            live = await self._live_nodes(nodes) if nodes else []
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, fields in hooks:  # webhook and Dapr outboxes: the same bound
                    pipe.xadd(stream, fields, maxlen=K.OUTBOX_MAXLEN, approximate=True)
                for node in live:
                    stream = self.keys.delivery(node.decode())
                    # no EXPIRE: the node's heartbeat keeps its stream alive, and a node found
                    # dead stops getting writes within NODE_CHECK_S, long before its stream's
                    # DELIVERY_TTL runs out (XADD keeps a key's TTL)
                    for n, event in enumerate(events):
                        pipe.xadd(stream, {"s": sid, "o": first + n, "e": event},
                                  maxlen=K.DELIVERY_MAXLEN, approximate=True)
                if len(live) < len(nodes):
                    # a node that died without draining: stop writing for it (an edge that
                    # was only cut off re-registers on its next heartbeat and catches up)
                    pipe.hdel(self.keys.nodes(sid), *(n for n in nodes if n not in live))
                if not self.cluster:  # runs after the XADDs above
                    for o in self.outboxes:
                        pipe.execute_command("EVAL", W.ADVANCE, 1, self.keys.meta(sid),
                                             o.field, first, last)
                for cmd in then or ():
                    pipe.execute_command(*cmd)
                await pipe.execute()
            if self.cluster:  # other masters: only once they are in
                for o in self.outboxes:
                    await self.redis.eval(W.ADVANCE, 1, self.keys.meta(sid), o.field, first,
                                          last)
        except REDIS_DOWN:
            if not self.cluster:
                raise

    async def _webhook_mark(self, sid: str) -> None:
        """Before an append, with an outbox on (webhooks, Dapr): make the session findable by
        the outboxes' sweepers (sessions/webhook_outbox.py), at most once per
        ``WEBHOOK_MARK_S``. Nothing when both are off."""
        if not self.outboxes:
            return
        now = time.monotonic()
        if self._marks.due(sid, now):
            await W.mark(self.redis, self.keys, self.outboxes, sid)
            self._marks.done(sid, now)

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
