"""The send side of one client connection: its outbox, writer task, send budget, stall rule
and close (:class:`Sender`, which :class:`gateway.connection.Connection` extends).

Writes go through one outbox per connection, drained by a writer task that exists only while
there is something to write, so an idle connection holds no task. The send budget and the
stall rule are the protocol's (``gateway/session_protocol.py``); this module asks it and does
what it says. A frame the budget has no room for closes the connection ``SLOW`` (nobody else
waits for it), unless the client can do without it (:meth:`Sender.offer`: gateway/drops.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque

from agentia.codes import CloseCode
from gateway import close_log as CL
from gateway import drops as D
from gateway import session_protocol as S
from gateway.host import Host
from gateway.transport import Transport

_PACE_POLL_S = 0.25


class Sender:
    __slots__ = ("_drained", "closed", "closer", "node", "outbox", "progress_at", "queued",
                 "state", "transport", "watch", "writer")

    def __init__(self, node: Host, state: S.SessionProtocol) -> None:
        self.node = node
        self.state = state
        self.transport: Transport | None = None
        self.outbox: deque[bytes] | None = None
        """Frames waiting for the writer; None while empty (an empty deque costs ~620 bytes,
        a twentieth of an idle connection)."""
        self.queued = 0
        """Bytes in the outbox, including the frame the writer is writing."""
        self.progress_at = 0.0
        """When the writer last got a frame out (or the outbox started filling)."""
        self.writer: asyncio.Task[None] | None = None
        self.closed = False
        self.closer: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None
        self.watch: D.Watch | None = None
        """Set while bytes wait in the library's buffer (seen by the sweep, or at a drop)."""

    # ------------------------------------------------------------ writing

    def attach(self, transport: Transport) -> None:
        self.transport = transport
        self._kick()

    def mark_closed(self) -> None:
        """The peer is gone or the transport is closing it: write and read no more."""
        self.closed = True

    def pending(self) -> int:
        """Bytes waiting for this client: the outbox plus the library's write buffer."""
        t = self.transport
        return self.queued + (t.buffered() if t is not None else 0)

    def push(self, frame: bytes) -> None:
        """Queue one frame, unless the protocol says the send budget forbids it (SLOW)."""
        if self.closed:
            return
        refusal = self._refusal(len(frame))
        if refusal is not None:
            self.close_soon(refusal.code, refusal.reason)
            return
        self._queue(frame)

    def _refusal(self, size: int, optional: bool = False) -> S.Close | None:
        """The protocol's objection to queueing ``size`` bytes more (the send budget, the
        send queue; an ``optional`` frame leaves room for control frames), None when it has
        none."""
        before, outbox = self.pending(), self.outbox
        if before or outbox is not None:  # else nothing waits: the protocol has no objection
            return self.state.on_write(before, size, len(outbox or ()), optional)
        return None

    def offer(self, frame: bytes) -> bool:
        """Queue a frame the client can do without (a chunk, partial or interim transcript)
        if the protocol has no objection; False when it was dropped instead (not SLOW)."""
        if self.closed:
            return True  # nothing to write or to recover any more
        if self._refusal(len(frame), optional=True) is None:
            self._queue(frame)
            return True
        if self.watch is None:  # the sweep's stall rule watches it from now (stalled)
            self.watch = D.Watch(self.pending(), time.monotonic())
        return False

    def _queue(self, frame: bytes) -> None:
        if self.watch is not None:
            self.watch.added += len(frame)
        outbox = self.outbox
        if outbox is None:
            if self.writer is None and self.transport is not None \
                    and self.transport.send_now(frame):
                m = self.node.metrics
                m["frames_out"] += 1
                m["bytes_out"] += len(frame)
                return
            outbox = self.outbox = deque()
            self.progress_at = time.monotonic()
        outbox.append(frame)
        self.queued += len(frame)
        self._kick()

    def _count_out(self, frame: bytes) -> None:
        m = self.node.metrics
        m["frames_out"] += 1
        m["bytes_out"] += len(frame)

    def check_budget(self) -> None:
        """After the library itself wrote something (a pong to a WebSocket PING). Over the
        budget while already closing (a close frame cannot get through): reset at once."""
        close = self.state.over_budget(self.pending())
        if close is None:
            return
        if not self.closed:
            self.close_soon(close.code, close.reason)
        elif self.transport is not None:
            self.transport.abort()

    def stalled(self, now: float) -> S.Close | None:
        """Frames have waited in the outbox without any getting out for ``send_stall_s``, or
        bytes in the library's buffer without the kernel taking any: a SLOW close. (picows
        writes into its buffer at once: before session 15 a client whose last frames sat there
        was not seen stalled, and one that dropped chunks would not have been.)"""
        if self.outbox:
            return self.state.stalled(self.progress_at, now)
        pending = self.pending()
        if not pending:  # nothing waits: nothing to watch
            self.watch = None
            return None
        if self.watch is None:
            self.watch = D.Watch(pending, now)
        return self.state.stalled(self.watch.progress(pending, now), now)

    def wake(self) -> None:
        """Something was written out: a paced replay may go on."""
        if self._drained is not None:
            self._drained.set()

    def _kick(self) -> None:
        if self.writer is None and self.transport is not None and self.outbox:
            self.writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        assert self.transport is not None
        try:
            while self.outbox:
                frame = self.outbox[0]
                await self.transport.send(frame)
                if self.outbox:  # else a SLOW close dropped it meanwhile
                    self.outbox.popleft()
                    self.queued -= len(frame)
                self.progress_at = time.monotonic()
                self._count_out(frame)
                self.wake()
        except Exception:
            self.closed = True  # the peer is gone; the read loop will end too
        finally:
            self.writer = None
            if not self.outbox:
                self.outbox, self.queued = None, 0
            self.wake()

    async def push_paced(self, frame: bytes) -> None:
        """Push, but first wait while the protocol says so (half the send budget is used): a
        replay goes at the pace the client reads. No progress for ``send_stall_s``: SLOW."""
        last, since = self.pending(), time.monotonic()
        while not self.closed and self.state.must_pace(self.pending(), len(self.outbox or ()),
                                                       len(frame)):
            self._drained = self._drained or asyncio.Event()
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), _PACE_POLL_S)
            now, waiting = time.monotonic(), self.pending()
            if waiting < last:
                since = now
            elif (stall := self.state.stalled(since, now)) is not None:
                self.close_soon(stall.code, stall.reason)
            last = waiting
        self.push(frame)

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Close after what is queued is written (a slow reader's queue is dropped)."""
        if self.closed:
            return
        self.closed = True
        self.node.metrics[_CLOSE_TALLY.get(code, "other_closes")] += 1
        if code in CL.LOGGED:
            st, waiting = self.state, len(self.outbox or ())
            CL.log_close(code, reason, st.session, st.user, self.pending(), waiting,
                         time.monotonic() - self.progress_at if waiting else 0.0,
                         st.cursor.sent, st.cursor.seen)
        if code is CloseCode.SLOW:
            self.outbox, self.queued = None, 0
        self.closer = self.node.spawn(self._close(code, reason))

    async def _close(self, code: CloseCode, reason: str) -> None:
        if self.transport is None:
            return
        if code is CloseCode.SLOW:
            # The socket's buffers are full: no close frame could get through, and waiting
            # for one would keep the socket and its buffers for seconds. Reset it now.
            if self.writer is not None:
                self.writer.cancel()
            self.transport.abort()
            return
        try:
            if self.writer is not None:
                await asyncio.wait_for(asyncio.shield(self.writer), 5)
            await asyncio.wait_for(self.transport.close(int(code), reason), 5)
        except Exception:
            self.transport.abort()


_CLOSE_TALLY = {CloseCode.SLOW: "slow_closes", CloseCode.FLOOD: "flood_closes",
                CloseCode.SESSION_LOST: "session_lost_closes",
                CloseCode.IDLE: "idle_closes", CloseCode.TOKEN_EXPIRED: "expired_closes",
                CloseCode.SERVICE_RESTART: "drain_closes"}
