"""One client connection: frames in, session events out, through a bounded outbox.

Transport-agnostic: it talks to a :class:`Transport` and to the bus. Writes go through one
outbox per connection, drained by a writer task that exists only while there is something to
write, so an idle connection holds no task. A full outbox means the client reads too slowly:
it is closed with ``SLOW`` and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from agentia.codes import AgentiaError, BusUnavailable, CloseCode, ErrorCode, SessionLost
from agentia.logs import Throttle
from gateway import protocol as P
from gateway.transport import Transport
from sessions.bus import Bus, frame_for

if TYPE_CHECKING:
    from gateway.node import EdgeNode

log = logging.getLogger("agentia.edge")
REPLAY_PAGE = 200
"""Most events read from the log at once; fewer when they are large (see ``_page``)."""
REPLAY_FIRST_PAGE = 4
_PACE_POLL_S = 0.25
_THROTTLE = Throttle(60.0)


class Connection:
    __slots__ = ("_drained", "closed", "closer", "filler", "node", "outbox", "progress_at",
                 "queued", "state", "transport", "writer")

    def __init__(self, node: EdgeNode, state: P.ConnState) -> None:
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
        self.filler: asyncio.Task[object] | None = None
        self._drained: asyncio.Event | None = None

    @property
    def bus(self) -> Bus:
        return self.node.bus

    # ------------------------------------------------------------ writing

    def attach(self, transport: Transport) -> None:
        self.transport = transport
        self._kick()

    def pending(self) -> int:
        """Bytes waiting for this client: the outbox plus the library's write buffer."""
        t = self.transport
        return self.queued + (t.buffered() if t is not None else 0)

    def push(self, frame: bytes) -> None:
        """Queue one frame. Over the send budget the connection is closed SLOW (one frame
        larger than the budget still goes out when nothing else is waiting)."""
        if self.closed:
            return
        before = self.pending()
        if before and before + len(frame) > self.node.settings.send_budget_bytes:
            self.close_soon(CloseCode.SLOW, "send budget exceeded: reading too slowly")
            return
        if self.outbox is None:
            if self.writer is None and self.transport is not None \
                    and self.transport.send_now(frame):
                self.node.metrics["frames_out"] += 1
                self.node.metrics["bytes_out"] += len(frame)
                return
            self.outbox = deque()
            self.progress_at = time.monotonic()
        elif len(self.outbox) >= self.node.limits.send_queue:
            self.close_soon(CloseCode.SLOW, "send queue full: reading too slowly")
            return
        self.outbox.append(frame)
        self.queued += len(frame)
        self._kick()

    def check_budget(self) -> None:
        """After the library itself wrote something (a pong to a WebSocket PING). Over the
        budget while already closing (a close frame cannot get through): reset at once."""
        if self.pending() <= self.node.settings.send_budget_bytes:
            return
        if not self.closed:
            self.close_soon(CloseCode.SLOW, "send budget exceeded: reading too slowly")
        elif self.transport is not None:
            self.transport.abort()

    def stalled(self, now: float) -> bool:
        """Frames have waited without any getting out for ``send_stall_s``."""
        return bool(self.outbox) and now - self.progress_at > self.node.settings.send_stall_s

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
                self.node.metrics["frames_out"] += 1
                self.node.metrics["bytes_out"] += len(frame)
                self.wake()
        except Exception:
            self.closed = True  # the peer is gone; the read loop will end too
        finally:
            self.writer = None
            if not self.outbox:
                self.outbox, self.queued = None, 0
            self.wake()

    async def push_paced(self, frame: bytes) -> None:
        """Push, but first wait while half the send budget (or half the send queue) is used:
        a replay goes at the pace the client reads. No progress for ``send_stall_s``: SLOW."""
        half, frames = self.node.settings.send_budget_bytes // 2, self.node.limits.send_queue // 2
        last, since = self.pending(), time.monotonic()
        while not self.closed and (self.pending() >= half or len(self.outbox or ()) >= frames):
            self._drained = self._drained or asyncio.Event()
            self._drained.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), _PACE_POLL_S)
            now, waiting = time.monotonic(), self.pending()
            if waiting < last:
                since = now
            elif now - since > self.node.settings.send_stall_s:
                self.close_soon(CloseCode.SLOW, "send stalled: reading too slowly")
            last = waiting
        self.push(frame)

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Close after what is queued is written (a slow reader's queue is dropped)."""
        if self.closed:
            return
        self.closed = True
        self.node.metrics[_CLOSE_TALLY.get(code, "other_closes")] += 1
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

    # ------------------------------------------------------------ session events

    def on_live(self, offset: int, frame: bytes) -> None:
        decision = self.state.cursor.on_live(offset)
        if decision is P.Delivery.SEND:
            self.push(frame)
        elif decision is P.Delivery.CATCH_UP:
            self.start_filler()

    def start_filler(self) -> None:
        """Fill a gap from the log in the background (the cursor is already catching up)."""
        self.filler = self.node.spawn(self._fill())

    async def _fill(self) -> None:
        try:
            await self.catch_up()
        except BusUnavailable:
            self.state.cursor.catching_up = False  # the next live event retries
        finally:
            self.filler = None

    async def catch_up(self, epoch: str | None = None) -> tuple[bool, str]:
        """Write what the log has after the cursor; (nothing was missing, current epoch).

        Raises BusUnavailable; the cursor then still says "catching up" (callers reset it).
        """
        cursor, sid = self.state.cursor, self.state.session
        recovered, current = True, epoch or self.state.epoch
        count = REPLAY_FIRST_PAGE
        while not self.closed:
            r = await self.bus.replay(sid, cursor.sent, epoch, count)
            current = r.epoch
            if not r.recovered:
                recovered, epoch = False, None
                cursor.sent = r.events[0][0] - 1 if r.events else r.offset
            for offset, event in r.events:
                if cursor.on_replayed(offset):
                    await self.push_paced(frame_for(offset, event))
            if len(r.events) < count and not cursor.finish_catch_up():
                break
            count = self._page(r.events)
        return recovered, current

    def _page(self, events: list[tuple[int, bytes]]) -> int:
        """Events to read next: about half the send budget's worth, judged by the last page
        (a page is held in memory while it is paced out)."""
        size = sum(len(e) for _, e in events) // max(1, len(events)) + 16
        return max(1, min(REPLAY_PAGE, self.node.settings.send_budget_bytes // 2 // size))

    # ------------------------------------------------------------ frames in

    async def on_frame(self, raw: str | bytes) -> None:
        now = time.monotonic()
        st = self.state
        st.last_seen = now
        self.node.metrics["frames_in"] += 1
        self.node.metrics["bytes_in"] += len(raw)
        frame: P.ClientFrame | None = None
        try:
            frame = P.parse_frame(raw, self.node.limits.max_text_chars)
            await self._dispatch(frame, now)
        except SessionLost as err:
            self.node.metrics[f"error:{err.code}"] += 1
            self.push(P.error_frame(err).encode())
            self.close_soon(CloseCode.SESSION_LOST, "session state was lost: reconnect")
        except AgentiaError as err:
            if err.ref is None and isinstance(frame, P.Send | P.Resume | P.Cancel):
                err.ref = frame.id
            self.node.metrics[f"error:{err.code}"] += 1
            self.push(P.error_frame(err).encode())
            if err.code in _STRIKES and st.strikes.hit(now):
                self.close_soon(CloseCode.FLOOD, "too many bad or rate-limited frames")
        except Exception as exc:
            self._internal(exc, now)

    def _internal(self, exc: Exception, now: float) -> None:
        """An unexpected failure: answered ``internal``, a strike (a client must not get
        expensive failures for free), logged once a minute per exception type."""
        held = _THROTTLE.allow(type(exc))
        if held is not None:
            log.error("frame from session %s failed (%d more of this kind in the last minute "
                      "not logged)", self.state.session, held, exc_info=exc)
        self.node.metrics["error:internal"] += 1
        self.push(P.error_frame(AgentiaError(ErrorCode.INTERNAL, "internal error")).encode())
        if self.state.strikes.hit(now):
            self.close_soon(CloseCode.FLOOD, "too many bad or rate-limited frames")

    def ping_allowed(self, now: float) -> bool:
        """Take one ping from the allowance shared by ``ping`` frames and WebSocket PINGs."""
        st, lim = self.state, self.node.limits
        if st.pings is None:
            st.pings = P.TokenBucket(lim.ping_rate_per_s, lim.ping_burst)
        return st.pings.take(now)

    def on_ws_ping(self) -> bool:
        """A WebSocket PING arrived: True to answer it. Over the allowance: close FLOOD."""
        if self.closed:
            return False
        if self.ping_allowed(time.monotonic()):
            return True
        self.close_soon(CloseCode.FLOOD, "too many pings")
        return False

    def _rate_limited(self, bucket: P.TokenBucket, now: float, ref: str | None) -> AgentiaError:
        st = self.state
        # A strike only for a client that did not wait as long as it was told to.
        if now < st.retry_at and st.strikes.hit(now):
            self.close_soon(CloseCode.FLOOD, "kept sending while rate limited")
        wait = bucket.retry_after_ms()
        st.retry_at = now + wait / 1000
        return AgentiaError(ErrorCode.RATE_LIMITED, "too many frames, slow down", ref, wait)

    async def _dispatch(self, frame: P.ClientFrame, now: float) -> None:
        st = self.state
        if isinstance(frame, P.Ping):
            if not self.ping_allowed(now):
                assert st.pings is not None
                raise self._rate_limited(st.pings, now, None)
            self.push(P.pong_frame(frame.data).encode())
            return
        if not st.bucket.take(now):
            raise self._rate_limited(st.bucket, now, frame.id)
        if isinstance(frame, P.Send):
            await self.node.check_overload(st.session, frame.id)
            res = await self.bus.submit(st.session, frame.id, frame.text, user=st.user)
            self.node.metrics["turns_accepted"] += 0 if res.duplicate else 1
            self.push(P.ack_frame(frame.id, res.offset, res.duplicate).encode())
        elif isinstance(frame, P.Resume):
            if self.filler is not None:
                await self.filler  # one catch-up at a time per connection
            st.cursor.start_catch_up(frame.after)
            try:
                recovered, epoch = await self.catch_up(frame.epoch)
            except BusUnavailable:
                st.cursor.catching_up = False
                raise
            self.push(P.resumed_frame(recovered, st.cursor.sent, epoch, frame.id).encode())
        elif isinstance(frame, P.Cancel):
            turn = await self.bus.cancel(st.session, frame.turn)
            if not turn:
                raise AgentiaError(ErrorCode.TURN_NOT_ACTIVE, "no such turn is pending or running")
            reply: dict[str, object] = {"type": "cancelling", "turn": turn}
            if frame.id is not None:
                reply["id"] = frame.id
            self.push(P.encode(reply).encode())


_STRIKES = {ErrorCode.BAD_JSON, ErrorCode.BAD_FRAME}
_CLOSE_TALLY = {CloseCode.SLOW: "slow_closes", CloseCode.FLOOD: "flood_closes",
                CloseCode.SESSION_LOST: "session_lost_closes",
                CloseCode.IDLE: "idle_closes", CloseCode.TOKEN_EXPIRED: "expired_closes",
                CloseCode.SERVICE_RESTART: "drain_closes"}
