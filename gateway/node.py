"""The edge node: composition root of one edge process.

It admits connections (auth, capacity, the per-user limits of sessions/opening.py), opens
their sessions (gateway/opener.py), keeps the local registry of sessions to connections
(gateway/registry.py), reads its own delivery stream and fans events out, sweeps idle and
expired connections, heartbeats, writes its users' session lists and presence
(gateway/session_lists.py), and drains on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections import Counter
from collections.abc import Coroutine
from typing import Any

from agentia import metrics as M
from agentia import tracing
from agentia.codes import AgentiaError, BusUnavailable, CloseCode, ErrorCode, SessionLost
from agentia.logs import Throttle
from agentia.settings import FD_RESERVE
from agentia.settings_edge import EdgeSettings
from gateway import protocol as P
from gateway.auth import AuthError, token_from, verifier_for
from gateway.connection import Connection
from gateway.leases import ConnectionLeases
from gateway.opener import OPEN_BATCH, SessionOpener, refusal
from gateway.registry import LocalSessions
from gateway.routing import origin_allowed
from gateway.session_lists import SessionLists
from gateway.session_protocol import Rules, SessionProtocol
from gateway.traced import TracedTurns
from sessions import keys as K
from sessions.backend_redis import Backend, PresenceWriter
from sessions.bus import Bus, frame_for
from sessions.membership import Membership
from sessions.opening import Limits
from sessions.roles import ChunkAt

__all__ = ["OPEN_BATCH", "EdgeNode", "origin_allowed"]  # origin_allowed: tests import it here

log = logging.getLogger("agentia.edge")
_THROTTLE = Throttle(60.0)


class EdgeNode:
    def __init__(self, settings: EdgeSettings, bus: Bus, node_id: str | None = None) -> None:
        self.settings = settings
        self.bus = bus
        self.id = node_id or uuid.uuid4().hex[:12]
        self.verifier = verifier_for(settings)
        self.origins = settings.origins()
        self.limits = P.Limits(**{f.name: getattr(settings, f.name)
                                  for f in dataclasses.fields(P.Limits)})
        self.hard_cap = settings.max_connections + FD_RESERVE // 2
        self.local = LocalSessions()
        """This edge's connections by session and user (gateway/registry.py)."""
        self.sessions = self.local.by_session
        self.metrics: Counter[str] = Counter()
        self.rules = Rules(self.limits, settings.send_stall_s, self.metrics)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.draining = False
        self.redis_ok = True
        self.membership = Membership(bus, self.id, self, "edge",
                                     settings.delivery_linger_ms / 1000)
        self._synced: Counter[str] = Counter()
        self._lag: dict[tuple[str, int], tuple[float, int]] = {}
        """When each shard's lag was read, and the figure (:meth:`check_overload`)."""
        self._lag_wanted: set[tuple[str, int]] = set()
        """Shards sent turns to since the lags were last read."""
        self._public_limits = self.limits.public()
        self.users = bus.user_limits(Limits(
            settings.max_connections_per_user_total, settings.max_sessions_per_hour,
            settings.max_sessions_per_user, bus.new_session_ttl))
        self.opener = SessionOpener(bus, self.id, self.users)
        self.leases = ConnectionLeases(self.users, self.id, self.metrics, OPEN_BATCH)
        self.presence = PresenceWriter(bus, self.id)
        """The devices in their sessions' presence (``GET /v1/sessions/{id}/presence``)."""
        self.lists = SessionLists(bus, self.presence)
        """Users' session lists and presence, written in batches (gateway/session_lists.py)."""
        self.backend = Backend(bus)
        """Operators' sends become posted messages (docs/backend.md)."""
        self._ua: dict[Connection, str] = {}
        """User-Agent of connections admitted and not yet opened (for presence)."""
        self.traced = TracedTurns() if tracing.ON else None
        """The turns being traced (gateway/traced.py); None when tracing is off."""

    @property
    def count(self) -> int:
        """Connections registered on this edge."""
        return self.local.count

    def tally(self, name: str) -> None:
        """Count something a transport saw (a failed handshake, a refusal)."""
        self.metrics[name] += 1

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background coroutine, tracked so shutdown can wait for or cancel it."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._reap)
        return task

    def _reap(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            # per connection tasks (closes, gap fills) could fail once per client: a line
            # (with its traceback) per exception type and minute is enough to see the bug
            held = _THROTTLE.allow(type(exc))
            if held is not None:
                log.error("background task failed (%d more of this kind in the last minute "
                          "not logged)", held, exc_info=exc)

    # ------------------------------------------------------------ admission

    def admit(self, headers: dict[str, str], query: str, session: str | None,
              agent: str = "") -> Connection | tuple[int, str]:
        """Decide a handshake from what this process knows alone (no I/O, so any transport can
        call it before the upgrade): a Connection registered locally, or (HTTP status, reason).
        The session itself is opened after the upgrade by :meth:`open`; ``agent`` (the
        query's, "" = none) is only checked for syntax here."""
        if not origin_allowed(self.origins, headers.get("origin", "")):
            self.metrics["refused_origin"] += 1
            return 403, "origin not allowed"
        if self.draining:
            self.metrics["refused_draining"] += 1
            return 503, "draining: reconnect to another node"
        if self.count >= self.settings.max_connections:
            self.metrics["refused_capacity"] += 1
            return 503, "over capacity: reconnect later"
        token = token_from(headers, query)
        if token is None:
            self.metrics["handshake_unauthorized"] += 1
            return 401, "missing token"
        try:
            ident = self.verifier.verify(token)
        except AuthError as exc:
            self.metrics["handshake_unauthorized"] += 1
            return 401, str(exc)
        sid = session or uuid.uuid4().hex
        if not K.SESSION_ID_RE.fullmatch(sid):
            self.metrics["refused_bad_request"] += 1
            return 400, "session id must match [A-Za-z0-9_.:-]{1,64}"
        if agent and not K.AGENT_NAME_RE.fullmatch(agent):
            self.metrics["refused_bad_request"] += 1
            return 400, "agent must match [a-z0-9][a-z0-9_-]{0,31}"
        if self.local.per_user[ident.user] >= self.settings.max_connections_per_user:
            self.metrics["refused_user_cap"] += 1
            return 429, "too many connections for this user on this node"
        # Registered locally before Redis learns of us, with the cursor deferring: an event
        # appended meanwhile is either caught up in open() or arrives after we are known.
        conn = Connection(self, SessionProtocol(self.rules, sid, ident.user, ident.expires,
                                                time.monotonic(), agent,
                                                ident.can("sessions:operate")))
        self.local.add(conn)
        if not session:
            self.opener.generated.add(sid)
        if headers.get("user-agent"):
            self._ua[conn] = headers["user-agent"]
        return conn

    async def open(self, conn: Connection) -> tuple[CloseCode, str] | None:
        """Take the connection's place in its user's limits, open (or join, or create) its
        session in Redis and queue ``welcome``; on failure the connection is dropped from
        the registry and the close to send is returned.

        Runs after the upgrade so that every transport refuses the same way, and so browsers,
        which cannot read the status of a refused upgrade, see the close code and reason."""
        state = conn.state
        leased = False
        ua = self._ua.pop(conn, None)
        try:
            leased = await self.leases.take(conn, state.user)
            info = await self.opener.open(state)
        except Exception as exc:
            self.local.remove(conn)
            self.opener.generated.discard(state.session)
            if leased:
                await self.leases.give_back(conn)
            return refusal(exc, state.session, self.metrics)
        self.opener.generated.discard(state.session)
        state.agent = info.agent
        conn.opened(P.welcome_frame(node=self.id, session=state.session, epoch=info.epoch,
                                    offset=info.offset, limits=self._public_limits,
                                    agent=info.agent).encode(),
                    info.epoch, info.offset)
        if not state.operator:  # not in the operator's own session list
            self.lists.opened(state.user, state.session, time.time())
        self.presence.join(state.session, conn, time.time(), ua, state.operator)
        self.metrics["handshakes"] += 1
        return None

    async def post_operator(self, sid: str, text: str, by: str, client_id: str
                            ) -> tuple[int, bool]:
        """An operator's ``send``: a ``message`` event, once per ``id`` of that operator."""
        posted = await self.backend.post_message_once(sid, "operator", text, by,
                                                      f"op:{by}:{client_id}")
        if posted is None:
            raise SessionLost()
        return posted

    async def forget(self, conn: Connection) -> None:
        """A connection ended (or its handshake failed after admission)."""
        sid = conn.state.session
        self.opener.generated.discard(sid)  # an upgrade that failed before open()
        self._ua.pop(conn, None)
        if not self.local.holds(conn):
            return  # forgotten already, or refused by open()
        self.presence.leave(sid, conn)
        if self.local.remove(conn):
            try:
                await self.bus.unregister(sid, self.id)
                if sid in self.sessions:  # a new connection came meanwhile: register again
                    await self.bus.register(sid, self.id)
            except BusUnavailable:
                pass
        await self.leases.give_back(conn)

    async def check_overload(self, sid: str, ref: str, agent: str = "") -> None:
        """Refuse new turns while the session's shard (of its agent) is too far behind. The
        lag of a shard is read when a send finds its figure over a second old, in one round
        trip with every other shard sent to since its figure was read, if over half a second
        old (session 17: a round trip per shard, up to 8 a second per edge and agent, ~0.3 a
        300-word turn at 40 sessions); a shard's first send waits for its figure, the sends
        that come meanwhile go by the last figures (each read it before, 0.12 reads a turn at
        200 sessions)."""
        shard = (agent or K.DEFAULT_AGENT, K.shard_for(sid, self.bus.shards))
        self._lag_wanted.add(shard)
        now = time.monotonic()
        if now - self._lag.get(shard, (0.0, 0))[0] > 1.0:
            # with the other shards sent to whose figure is over half a second old: shards
            # that stay busy are read together, once a second
            due = {w for w in self._lag_wanted if now - self._lag.get(w, (0.0, 0))[0] > 0.5}
            self._lag_wanted -= due
            for w in due:  # being read: the sends meanwhile go by the last figures
                self._lag[w] = (now, self._lag.get(w, (0.0, 0))[1])
            lags = await self.bus.shard_lags(due)
            now = time.monotonic()
            self._lag.update((w, (now, lag)) for w, lag in lags.items())
        if self._lag[shard][1] > self.settings.max_inbound_lag:
            raise AgentiaError(ErrorCode.OVERLOADED, "agents are overloaded, retry later", ref,
                               2000)

    # ------------------------------------------------------------ delivery

    # The node's membership (sessions/membership.py) reads the delivery stream and
    # heartbeats; this node is its handler: deliver, stream_back, forgotten, ...

    async def deliver_forever(self) -> None:
        await self.membership.deliver_forever()

    async def heartbeat_forever(self) -> None:
        await self.membership.heartbeat_forever()

    def deliver(self, sid: str, offset: int, event: bytes) -> None:
        conns = self.sessions.get(sid)
        if conns:
            frame = frame_for(offset, event)
            for conn in tuple(conns):
                conn.on_live(offset, frame)
            if self.traced is not None:
                self.traced.delivered(sid, event, len(conns))

    def deliver_chunk(self, sid: str, chunk: ChunkAt, frame: bytes) -> None:
        conns = self.sessions.get(sid)
        if conns:
            for conn in tuple(conns):
                conn.on_chunk(chunk, frame)
            if self.traced is not None:
                self.traced.chunk(sid, chunk.turn, len(conns))

    def deliver_frame(self, sid: str, frame: bytes) -> None:
        """An off-log frame (an interim ``transcript``): to the connections that are live."""
        for conn in tuple(self.sessions.get(sid, ())):
            conn.on_live_frame(frame)

    def session_deleted(self, sid: str) -> None:
        """The session was deleted: its devices here are closed with 4506 (not to come
        back: a new connection with the id would start a new, empty session)."""
        for conn in tuple(self.sessions.get(sid, ())):
            conn.close_soon(CloseCode.SESSION_DELETED, "session deleted")

    def stream_back(self) -> None:
        self._catch_up_all()

    async def forgotten(self) -> None:
        if self.sessions:
            await self._reregister()

    def heartbeat_done(self, ok: bool) -> None:
        self.redis_ok = ok

    def outage(self) -> None:
        self.metrics["redis_errors"] += 1

    def _catch_up_all(self) -> None:
        """The delivery stream could not be read for a while (Redis restarted, a Cluster
        master failed over): the tail written to it meanwhile may be gone, and a last event
        (a reply) has no successor to reveal the gap. Every connection re-reads the log."""
        for conns in list(self.sessions.values()):
            for conn in conns:
                conn.refill()

    async def _reregister(self) -> None:
        """Redis lost our state (restart without persistence): register sessions again."""
        log.warning("Redis forgot edge %s; re-registering %d sessions", self.id, len(self.sessions))
        for sid, conns in list(self.sessions.items()):
            conn = next(iter(conns), None)
            if conn is None:
                continue
            info = await self.bus.open_session(sid, conn.state.user, self.id)
            for c in conns:
                # a lost state is told; events written while writers thought this node dead
                # are read from the log
                c.reopened(info.epoch, info.offset)

    async def leases_forever(self) -> None:
        await self.leases.renew_forever()

    async def renew_leases(self) -> None:
        await self.leases.renew()

    async def user_sessions_forever(self, every_s: float = 0.5) -> None:
        await self.lists.flush_forever(every_s)

    async def metrics_forever(self) -> None:
        """Move the hot path's plain counters into Prometheus once a second."""
        while True:
            M.sync(self.metrics, self._synced)
            M.CONNECTIONS.set(self.count)
            await asyncio.sleep(1.0)

    async def sweep_forever(self) -> None:
        """Close idle connections, those whose token expired and those whose queued frames
        made no progress for ``send_stall_s``."""
        while True:
            await asyncio.sleep(min(5.0, self.limits.idle_timeout_s / 3,
                                    self.settings.send_stall_s / 2))
            now, wall, leeway = time.monotonic(), time.time(), self.verifier.leeway_s
            for conns in list(self.sessions.values()):
                for c in tuple(conns):
                    c.execute(c.state.sweep(now, wall, leeway) or c.stalled(now))

    # ------------------------------------------------------------ drain

    async def drain(self, deadline: float) -> None:
        """Tell every client to reconnect elsewhere (1012) and wait for writes to finish."""
        self.draining = True
        for conns in list(self.sessions.values()):
            for c in tuple(conns):
                c.close_soon(CloseCode.SERVICE_RESTART, "server restarting: reconnect")
        if self.count:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.local.emptied.wait(), deadline)
        self.membership.stopping = True
        for t in list(self.tasks):
            t.cancel()
        M.sync(self.metrics, self._synced)  # the last second's counts too
        M.CONNECTIONS.set(self.count)
        with contextlib.suppress(BusUnavailable):
            await self.lists.flush_last()
            await self.membership.leave()
