"""One node's membership of the bus, shared by every process kind that holds sessions for
clients (an edge, a voice call): heartbeat, re-register when Redis forgot the node, read the
node's own delivery stream, and catch up from the logs after that stream could not be read.

What to do with the events and when Redis forgot the node is the handler's business
(:class:`NodeHandler`), as centrifuge's broker calls back its node: the membership never sees
connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from agentia.codes import BusUnavailable
from sessions import keys as K
from sessions.roles import ChunkAt, NodeDelivery

log = logging.getLogger("agentia.membership")
BACKOFF_S = (0.1, 2.0)
"""Retry delays of a failed delivery read: from 0.1 s, doubling, at most 2 s."""
LINGER_BELOW = 100
"""A delivery read that returned this many events or more is followed by the next at once
(the node is behind: no point gathering more)."""
HEARTBEAT_S = min(5.0, K.NODE_TTL / 3)
"""Three heartbeats per NODE_TTL: one lost beat does not make the node look dead."""


class NodeHandler(Protocol):
    """What a node does with its membership's news."""

    def deliver(self, sid: str, offset: int, event: bytes) -> None:
        """An event of session ``sid`` at ``offset`` (the log event JSON), in stream order."""

    def deliver_chunk(self, sid: str, chunk: ChunkAt, frame: bytes) -> None:
        """A chunk of a running turn of ``sid`` (its ``chunk`` frame), in stream order."""

    def deliver_frame(self, sid: str, frame: bytes) -> None:
        """An off-log frame for the clients of ``sid`` (an interim ``transcript``): to each
        that is live, never replayed."""

    def session_deleted(self, sid: str) -> None:
        """Session ``sid`` was deleted (``DELETE /v1/sessions/{id}``): end what holds it."""

    def stream_back(self) -> None:
        """The delivery stream is readable again after failing: what was written to it
        meanwhile may be gone (Redis restarted, a master failed over), and a last event has
        no successor to reveal the gap: re-read the sessions' logs."""

    async def forgotten(self) -> None:
        """Redis lost the node's state (restarted without persistence): register the
        sessions again (``open_session`` with this node), catching up what was missed."""

    def heartbeat_done(self, ok: bool) -> None:
        """A heartbeat reached Redis (``ok``) or did not."""

    def outage(self) -> None:
        """A heartbeat or a read met a Redis outage (counted by edges)."""


class Membership:
    """Node ``node`` on ``bus``, calling back ``handler``; ``kind`` names it in logs."""

    def __init__(self, bus: NodeDelivery, node: str, handler: NodeHandler,
                 kind: str = "node", linger_s: float = 0.0) -> None:
        self.bus = bus
        self.node = node
        self.handler = handler
        self.kind = kind
        self.linger_s = linger_s
        """After a read that found events waiting and was not full, wait this long before
        the next (see :meth:`deliver_forever`); 0: read again at once."""
        self.stopping = False
        """Set by the owner before cancelling the loops: :meth:`deliver_forever` ends after
        the read in flight (at most its 1 s block) even if redis-py swallowed the cancel,
        which a read cancelled right after the node started was seen to do."""

    async def beat(self) -> bool:
        """One heartbeat; False when Redis had forgotten the node (raises BusUnavailable)."""
        return await self.bus.heartbeat_node(self.node)

    async def leave(self) -> None:
        """Drop the node's stream and heartbeat (raises BusUnavailable)."""
        await self.bus.drop_node(self.node)

    async def deliver_forever(self) -> None:
        """Read the node's delivery stream and hand each event to the handler.

        Events that come densely (a read answered within ``linger_s``, not full) are
        gathered for ``linger_s`` before the next read: a read costs the node a round trip
        to Redis (two system calls, and Redis a reply), more than handing one event to a
        connection, and when events come a few at a time it is paid per event
        (docs/benchmarks-peer.md, the chunk run). The first event after a quiet stream is
        read at once; an event waits at most ``linger_s`` more when others came just before
        it. Order and the stream position are untouched."""
        last = b"0-0"
        backoff = BACKOFF_S[0]
        while not self.stopping:
            try:
                asked = time.monotonic()
                rows = await self.bus.read_delivery(self.node, last)
                if backoff > BACKOFF_S[0]:
                    self.handler.stream_back()
                backoff = BACKOFF_S[0]
            except Exception as exc:
                self.handler.outage()
                if not isinstance(exc, BusUnavailable):
                    log.exception("reading the delivery stream of %s failed; retrying",
                                  self.node)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            handler = self.handler
            for d in rows:
                last = d.id
                if d.chunk is not None:
                    handler.deliver_chunk(d.session, d.chunk, d.event)
                elif d.notice:
                    if d.notice == "frame":
                        handler.deliver_frame(d.session, d.event)
                    elif d.notice == "deleted":  # other notices: from a newer version
                        handler.session_deleted(d.session)
                else:
                    handler.deliver(d.session, d.offset, d.event)
            if not rows:
                continue
            if self._reads_ahead():
                # the next read is asked for already (sessions/delivery_reads.py) and Redis
                # answers it when events come: there is no round trip to save by lingering.
                # One pass of the loop instead, so the connections' writers run between
                # answers. (A read of hundreds of events is safe either way since session 13:
                # a connection without send budget for a live event falls behind and fills
                # from the log, gateway/connection.py ``on_live``.)
                await asyncio.sleep(0)
            elif len(rows) < LINGER_BELOW and time.monotonic() - asked < self.linger_s:
                await asyncio.sleep(self.linger_s)

    def _reads_ahead(self) -> bool:
        ahead = getattr(self.bus, "reads_ahead", None)
        return bool(ahead(self.node)) if ahead is not None else False

    async def heartbeat_forever(self, *, beaten: bool = False) -> None:
        """Heartbeat every HEARTBEAT_S (the first at once unless ``beaten`` already)."""
        if beaten:
            await asyncio.sleep(HEARTBEAT_S)
        while True:
            try:
                known = await self.beat()
                self.handler.heartbeat_done(True)
                if not known:
                    await self.handler.forgotten()
            except BusUnavailable:
                self.handler.heartbeat_done(False)
                self.handler.outage()
                log.warning("Redis unavailable; %s %s keeps its clients and retries",
                            self.kind, self.node)
            except Exception:
                log.exception("heartbeat of %s %s failed; retrying", self.kind, self.node)
            await asyncio.sleep(HEARTBEAT_S)
