"""The session log on Redis (:class:`sessions.roles.SessionLog`): open a session, append to
its log (fenced, idempotent Lua, sessions/scripts.py), read a range back, its meta; the users'
lists of their sessions are :class:`sessions.user_sessions_redis.RedisUserSessions`."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any

import orjson
from redis.exceptions import NoScriptError, OutOfMemoryError

from agentia import tracing
from agentia.codes import AgentiaError, BusUnavailable, ErrorCode, SessionLost
from sessions import events as E
from sessions import keys as K
from sessions.agents_redis import RedisAgentDirectory
from sessions.deferred_appends import Deferred, DeferredAppends
from sessions.delivery_entries import chunk_record
from sessions.redis_client import REDIS_DOWN
from sessions.redis_core import down
from sessions.roles import (
    AgentMismatch,
    Ended,
    Forbidden,
    LockLost,
    Missing,
    Opening,
    Replay,
    SessionInfo,
    Submitted,
    UnknownAgent,
)
from sessions.turns_redis import turn_of
from sessions.user_sessions_redis import RedisUserSessions

_OPEN_REFUSALS = (Forbidden, Missing, UnknownAgent, AgentMismatch)


class RedisSessionLog(DeferredAppends, RedisAgentDirectory, RedisUserSessions):
    """Appends deliver to the session's nodes, hence built on :class:`RedisNodeDelivery`;
    sessions get their agent from the registry (:class:`RedisAgentDirectory`)."""

    def _open_call(self, sid: str, user: str, node: str, create: bool, agent: str,
                   new_agent: str) -> tuple[list[str], list[Any]]:
        k = self.keys
        return ([k.meta(sid), k.nodes(sid), k.log(sid), k.turns(sid), k.client_ids(sid),
                 k.memory(sid), k.lock(sid)],
                [user, secrets.token_hex(8), int(time.time()), K.SESSION_TTL, node,
                 self.new_session_ttl, "1" if create else "", agent, new_agent,
                 k.cancel_channel(), sid])

    def nodes_changed(self, sid: str) -> None:
        """A node joined ``sid`` (OPEN's notice, ``"<session> nodes"``): its nodes are
        re-read (``HKEYS``) at the end of the next tick that carries its chunks."""
        hit = self._session_nodes.get(sid)
        if hit is not None:
            self._session_nodes[sid] = (float("-inf"), hit[1])

    @staticmethod
    def _opened(sid: str, res: Any, agent: str) -> SessionInfo:
        if res[0] == b"forbidden":
            raise Forbidden(sid)
        if res[0] == b"new":
            raise Missing(sid)
        if res[0] == b"unknown":
            raise UnknownAgent(agent)
        if res[0] == b"mismatch":
            raise AgentMismatch(res[1].decode())
        return SessionInfo(res[1].decode(), int(res[2]), res[3].decode())

    @down
    async def open_session(self, sid: str, user: str, node: str = "", *,
                           create: bool = True, agent: str = "") -> SessionInfo:
        """Create the session for ``user`` or check that it is theirs; register ``node``.
        With ``create`` False a session that does not exist raises :class:`Missing`. A new
        session lives ``new_session_ttl`` until its first turn. ``agent``: the agent asked
        for (none: the session's, or the default agent for a new one); a new session asking
        for an unregistered agent raises :class:`UnknownAgent`, an existing one of another
        agent :class:`AgentMismatch`."""
        new_agent = await self.agent_for_new(agent)
        keys, args = self._open_call(sid, user, node, create, agent, new_agent)
        return self._opened(sid, await self._open(keys=keys, args=args), agent)

    @down
    async def open_sessions(self, opens: list[Opening]
                            ) -> list[SessionInfo | BaseException]:
        """Several :meth:`open_session` in one round trip: (sid, user, node, create[, agent])
        each; each result is a SessionInfo or the exception that call would have raised. An
        edge batches the handshakes that arrive while a batch is in flight (one write and one
        read instead of one each per handshake). On a Cluster, or without WAIT-free scripts,
        one by one."""
        if len(opens) == 1 or self.cluster or self.wait_replicas:
            return [await self._open_one(*o) for o in opens]
        asked = [o[4] if len(o) > 4 else "" for o in opens]
        new_agents = {a: await self.agent_for_new(a) for a in set(asked)}
        async with self.redis.pipeline(transaction=False) as pipe:
            for (sid, user, node, create, *_), agent in zip(opens, asked, strict=True):
                keys, args = self._open_call(sid, user, node, create, agent, new_agents[agent])
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
                    results.append(self._opened(o[0], res, o[4] if len(o) > 4 else ""))
                except _OPEN_REFUSALS as exc:
                    results.append(exc)
        return results

    async def _open_one(self, sid: str, user: str, node: str, create: bool, agent: str = ""
                        ) -> SessionInfo | BaseException:
        try:
            return await self.open_session(sid, user, node, create=create, agent=agent)
        except (*_OPEN_REFUSALS, BusUnavailable) as exc:
            return exc

    @down
    async def session_meta(self, sid: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.meta(sid))
        return {a.decode(): b.decode() for a, b in raw.items()}

    async def session_owner(self, sid: str) -> str | None:
        """The session's owner, None if there is no such session."""
        owner = await self.redis.hget(self.keys.meta(sid), "owner")
        return None if owner is None else str(owner.decode())

    @down
    async def submit(self, sid: str, client_id: str, text: str, *, user: str,
                     source: str = "chat") -> Submitted:
        """Append a user turn durably (log + pending turns + inbound shard), idempotently."""
        k = self.keys
        now = time.time()
        event = orjson.dumps(E.user(client_id, text, source, user, now))
        turn = {"c": client_id, "t": text, "u": user, "s": source, "ts": now}
        if tracing.ON and (tp := tracing.traceparent()):
            turn["tp"] = tp  # the trace of whoever submits (the edge's receive, a voice call)
        body = orjson.dumps(turn)
        await self._webhook_mark(sid)
        default = await self.default_agent()
        keys = [k.meta(sid), k.log(sid), k.turns(sid), k.client_ids(sid), k.nodes(sid)]
        inline = self._inline_targets(sid)  # the fan-out, queue entry, live score in SUBMIT
        more: list[Any] = ["", "", "", ""]
        if inline is not None:
            keys += [*(k.delivery(n.decode()) for n in inline),
                     k.inbound(K.shard_for(sid, self.shards), default),
                     self.user_keys.live(user)]
            more = [sid, K.DELIVERY_MAXLEN, default, int(now) + K.SESSION_TTL]
        res = await self._run_script(
            self._submit, keys=keys,
            args=[client_id, event, body, self.log_maxlen, K.SESSION_TTL, K.CLIENT_IDS_KEPT,
                  K.MAX_PENDING_TURNS, default, *more],
        )
        if int(res[0]) == -2:
            raise AgentiaError(ErrorCode.OVERLOADED, "too many turns are waiting in this "
                               "session; wait for the agent to answer", client_id, 2000)
        if int(res[0]) < 0:
            raise SessionLost(client_id)
        offset, dup, done, nodes = int(res[0]), bool(res[1]), int(res[2] or 0), res[5:]
        # the session's agent's shard ("": no agent registered yet, the default's)
        inbound = k.inbound(K.shard_for(sid, self.shards), res[3].decode())
        queue = ("XADD", inbound, "*", "s", sid, "o", offset)
        # the session now lives SESSION_TTL from this turn: so does its place among the
        # user's live sessions (sessions/opening.py), if it has one
        live = ("ZADD", self.user_keys.live(user), "XX", "GT", int(now) + K.SESSION_TTL, sid)
        then = ([] if dup and offset <= done else [queue]) + ([] if dup else [live])
        if inline is not None and not dup:  # in the script: what it did not do, as before
            rest = [n for n in nodes if n not in inline]
            if rest or not int(res[4]):
                await self._fan_out_all(sid, offset, [event], rest,
                                        [] if int(res[4]) else then)
            self._remember_nodes(sid, nodes, time.monotonic())
        elif self.cluster or self.wait_replicas:  # the queue entry waits for its replicas
            await self._submitted_apart(sid, offset, event, nodes, dup, then)
        elif not dup:  # one round trip after the script, not three (issue 13)
            await self._fan_out_all(sid, offset, [event], nodes, then)
        elif then:
            await self._synced(inbound, *then)
        return Submitted(offset, dup)

    async def _submitted_apart(self, sid: str, offset: int, event: bytes, nodes: list[bytes],
                               dup: bool, then: list[tuple[Any, ...]]) -> None:
        """A submit's fan-out, queue entry (confirmed by WAIT when asked) and live-session
        score one after another: on a Cluster the fan-out may fail alone (:meth:`_fan_out_all`)
        and they live on other masters."""
        if not dup:
            await self._fan_out(sid, offset, event, nodes)
        for cmd in then:
            if cmd[0] == "XADD":
                await self._synced(cmd[1], cmd)
            else:
                await self.redis.execute_command(*cmd)

    @down
    async def cancel(self, sid: str, turn: int | None) -> int:
        """Mark a pending or running turn cancelled; returns its offset, or 0 if none."""
        k = self.keys
        got = int(await self._cancel(keys=[k.meta(sid), k.turns(sid)], args=[turn or 0]))
        if got:
            # a Cluster forwards PUBLISH to every node, so a subscriber on any node hears it
            await self.redis.publish(k.cancel_channel(), f"{sid} {got}")
        return got

    @down
    async def append(self, sid: str, event: E.Event | list[E.Event], *, done: int | None = None,
                     owner: str = "", run: str = "", later: bool = False) -> int:
        """Append an event (or several, at consecutive offsets, in one script) to the session
        log and deliver it; returns the (last) offset. ``done`` finishes that turn (and drops
        its partial buffer); ``run`` (with a ``turn_start``) starts the partial buffer of that
        run (:meth:`stream_chunk`).

        With ``owner`` the write is fenced by the session lock (raises :class:`LockLost`) and
        idempotent: a retry after a dropped connection does not append twice.

        With ``later`` the events go with the session's next chunks (same pipeline, before
        them), not in a round trip of their own: for an event that text follows at once (the
        ``speaking`` state, sessions/turn_log.py). On a single Redis with the session's nodes
        known, the append itself waits for that tick (sessions/deferred_appends.py; 0 is
        returned); else the append is made now and only the nodes' copies wait.
        """
        return (await self._append_events(sid, event, done, owner, run, release=False,
                                          later=later))[0]

    async def _append_events(self, sid: str, event: E.Event | list[E.Event], done: int | None,
                             owner: str, run: str, release: bool,
                             remember: list[bytes] | None = None, later: bool = False,
                             ack: tuple[Any, ...] = (), tick: bool = False
                             ) -> tuple[int, Ended]:
        """Returns the last event's offset and, for an ending, whether it freed the lock,
        whether ``ack`` ran (a command run once the ending freed the lock, in its fan-out's
        round trip, on a single Redis only) and the next pending turn (with ``release``, when
        one is pending: the lock is kept for it). ``tick``: the script rides the worker's
        next tick when :meth:`rides_tick` (its caller's ``carry``, no await between)."""
        k = self.keys
        raws = [orjson.dumps(e) for e in (event if isinstance(event, list) else [event])]
        append_id = f"{owner}:{next(self._appends)}" if owner else ""
        await self._webhook_mark(sid)  # nothing to wait for when riding (no outbox then)
        tick = tick and self.rides_tick(sid)
        if self._deferred and not tick:  # riding, it goes first in the same tick
            await self._send_deferred(sid)  # the session's earlier append goes first
        # on a single Redis, the fan-out (and the ending's XACK) inside the script when the
        # session's live nodes are known (issue 13: the caller's own round trip fewer)
        inline = self._inline_targets(sid)
        keys = [k.meta(sid), k.log(sid), k.nodes(sid), k.lock(sid), k.turns(sid),
                k.partial(sid), k.memory(sid)]
        fan: list[Any] = ["", "", "", ""]
        if inline is not None:
            keys += [k.delivery(n.decode()) for n in inline]
            fan = [sid, K.DELIVERY_MAXLEN, "", ""]
            if ack:  # ("XACK", stream, group, id)
                keys.append(ack[1])
                fan[2:] = [ack[3], ack[2]]
        args = [raws[0], self.log_maxlen, K.SESSION_TTL, "" if done is None else done,
                append_id, owner, run, "1" if release else "", K.MEMORY_MAXLEN,
                len(remember or ()), *fan, *(remember or ()), *raws[1:]]
        if later and inline is not None and not ack:
            self._defer(Deferred(sid, keys, args, raws, inline))
            return 0, Ended(False)
        inline = None if later else inline
        if tick and inline is not None:
            res = await self._ride_tick(Deferred(sid, keys, args, raws, inline,
                                                 asyncio.get_running_loop().create_future()))
        else:
            res = await self._run_script(self._append, keys=keys, args=args)
        offset = int(res[0])
        if offset == -2:
            raise LockLost(sid)
        if offset <= 0:
            return offset, Ended(False)
        released = int(res[1]) == 1
        nxt = turn_of(sid, res[2], res[3]) if res[2] else None
        first = offset - len(raws) + 1
        if inline is not None:  # nodes the script did not know of: as before
            if rest := [n for n in res[4:] if n not in inline]:
                await self._fan_out_all(sid, first, raws, rest)
            self._remember_nodes(sid, res[4:], time.monotonic())  # all of them (not rest)
            return offset, Ended(released, bool(ack) and released, nxt)
        then = [ack] if ack and released and not self.cluster else []
        if later:
            await self._fan_out_later(sid, first, raws, res[4:])
        else:
            await self._fan_out_all(sid, first, raws, res[4:], then)
        return offset, Ended(released, bool(then), nxt)

    @down
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

    async def stream_chunk(self, sid: str, run: str, seq: int, event: bytes,
                           text: str) -> None:
        """One chunk of a running turn: :meth:`stream_chunks` of one."""
        await self.stream_chunks([(sid, run, seq, event, text)])

    @down
    async def stream_chunks(self, pieces: list[tuple[str, str, int, bytes, str]]) -> None:
        """Chunks of running turns (docs/protocol.md ``chunk``), ``(session, run, seq, frame,
        text)`` each, in one pipeline, not in the log: a piece with ``text`` (every
        ``PARTIAL_EVERY``-th, the text since the last) is pushed to its run's partial buffer as
        ``<run>#<seq>|<text>`` (what a resume reads; RPUSHX: a dropped buffer is not made again;
        before the delivery entries, so a reader that gets that piece finds it in the buffer),
        and the pieces for each node holding their sessions packed into **one** entry of that
        node's delivery stream (``{b: record\nrecord…}``, a record ``<session>\t<run>|<seq>\t
        <frame>``: ids hold no tab or newline, JSON frames no raw control character): a tick
        costs each node one entry to write and read, not one per piece. The nodes are known
        from the turns' own appends; those older than ``NODES_FRESH_S`` are re-read (``HKEYS``)
        at the end of this pipeline, for the next tick; the turns' endings waiting for this
        tick go last (sessions/deferred_appends.py ``_ride_tick``)."""
        ends = self._take_endings()  # before any await: one handed over later waits
        try:
            await self._stream_tick(pieces, ends)
        except BaseException as exc:
            self._endings_failed(ends, exc)
            raise

    async def _stream_tick(self, pieces: list[tuple[str, str, int, bytes, str]],
                           ends: list[Deferred]) -> None:
        k = self.keys
        sids = list(dict.fromkeys(p[0] for p in pieces))
        # log events left for this tick (:meth:`append` ``later``): taken now, sent first
        later = [self._later.pop(sid) for sid in sids if sid in self._later]
        nodes_of, stale = await self._nodes_for_tick(sids)
        every = list(dict.fromkeys(n for nodes in [*nodes_of.values(), *(j[3] for j in later)]
                                   for n in nodes))
        alive = set(await self._live_nodes(every)) if every else set()
        targets = [[n for n in nodes_of[p[0]] if n in alive] for p in pieces]
        batches: dict[tuple[bytes, bool], list[bytes]] = {}
        fresh: set[bytes] = set()
        taken: list[Deferred] = []
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                # appends left for this tick (and of the sessions whose ending rides it): first
                taken = self._take_deferred([*sids, *(d.sid for d in ends)], pipe)
                for sid, first, events, nodes in later:
                    for node in nodes:
                        if node in alive:
                            for n, event in enumerate(events):
                                pipe.xadd(k.delivery(node.decode()),
                                          {"s": sid, "o": first + n, "e": event},
                                          maxlen=K.DELIVERY_MAXLEN, approximate=True)
                for (sid, run, seq, event, text), live in zip(pieces, targets, strict=True):
                    if text:
                        pipe.rpushx(k.partial(sid), f"{run}#{seq}|{text}")
                    record, lean = chunk_record(sid.encode(), run.encode(), seq, event)
                    for node in live:
                        batches.setdefault((node, lean), []).append(record)
                        if seq == 1:
                            fresh.add(node)
                for (node, lean), records in sorted(batches.items(), key=lambda b: b[0][1]):
                    stream = k.delivery(node.decode())
                    for i in range(0, len(records), K.CHUNKS_PER_ENTRY):
                        pipe.xadd(stream, {b"t" if lean else b"b":
                                           b"\n".join(records[i:i + K.CHUNKS_PER_ENTRY])},
                                  maxlen=K.DELIVERY_MAXLEN, approximate=True)
                for node in fresh:  # the node's heartbeat keeps it alive after that
                    pipe.expire(k.delivery(node.decode()), K.DELIVERY_TTL)
                for sid in stale:
                    pipe.hkeys(k.nodes(sid))
                self._queue_endings(ends, pipe)
                replies = await pipe.execute(raise_on_error=not (taken or ends))
            tail = replies[len(replies) - len(ends):]
            try:  # a kept append run apart (scripts flushed) before an ending run apart
                if taken or ends:
                    await self._deferred_replies(taken, replies[:len(replies) - len(ends)])
            finally:
                await self._endings_replied(ends, tail)
            if stale:  # the HKEYS come just before the endings (queued last)
                end = len(replies) - len(ends)
                self._renew_nodes(stale, replies[end - len(stale):end])
        except REDIS_DOWN:
            self._keep_deferred(taken)
            if not self.cluster:  # on a Cluster, see _fan_out: the reply is what is durable
                raise
