"""One client connection: frames in, session events out, through a bounded outbox.

Transport-agnostic: it talks to a :class:`Transport` and to the bus. Writes go through one
outbox per connection, drained by a writer task that exists only while there is something to
write, so an idle connection holds no task. A full outbox means the client reads too slowly:
it is closed with ``SLOW`` and nobody else waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING

from agentia.codes import AgentiaError, BusUnavailable, CloseCode, ErrorCode, SessionLost
from gateway import protocol as P
from gateway.transport import Transport
from sessions.bus import Bus, frame_for

if TYPE_CHECKING:
    from gateway.node import EdgeNode

log = logging.getLogger("agentia.edge")
REPLAY_PAGE = 200


class Connection:
    __slots__ = ("_drained", "closed", "closer", "filler", "node", "outbox", "state",
                 "transport", "writer")

    def __init__(self, node: EdgeNode, state: P.ConnState) -> None:
        self.node = node
        self.state = state
        self.transport: Transport | None = None
        self.outbox: deque[bytes] | None = None
        """Frames waiting for the writer; None while empty (an empty deque costs ~620 bytes,
        a twentieth of an idle connection)."""
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

    def push(self, frame: bytes) -> None:
        if self.closed:
            return
        if self.outbox is None:
            if self.writer is None and self.transport is not None \
                    and self.transport.send_now(frame):
                self.node.metrics["frames_out"] += 1
                self.node.metrics["bytes_out"] += len(frame)
                return
            self.outbox = deque()
        elif len(self.outbox) >= self.node.limits.send_queue:
            self.close_soon(CloseCode.SLOW, "send queue full: reading too slowly")
            return
        self.outbox.append(frame)
        self._kick()

    def _kick(self) -> None:
        if self.writer is None and self.transport is not None and self.outbox:
            self.writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        assert self.transport is not None
        try:
            while self.outbox:
                frame = self.outbox.popleft()
                await self.transport.send(frame)
                self.node.metrics["frames_out"] += 1
                self.node.metrics["bytes_out"] += len(frame)
        except Exception:
            self.closed = True  # the peer is gone; the read loop will end too
        finally:
            self.writer = None
            if not self.outbox:
                self.outbox = None
            if self._drained is not None:
                self._drained.set()

    async def push_paced(self, frame: bytes) -> None:
        """Push, but first wait while the outbox is half full (used when replaying)."""
        while (self.outbox is not None and len(self.outbox) >= self.node.limits.send_queue // 2
               and not self.closed):
            self._drained = self._drained or asyncio.Event()
            self._drained.clear()
            await self._drained.wait()
        self.push(frame)

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Close after what is queued is written (a slow reader's queue is dropped)."""
        if self.closed:
            return
        self.closed = True
        self.node.metrics[_CLOSE_TALLY.get(code, "other_closes")] += 1
        if code is CloseCode.SLOW:
            self.outbox = None
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
        while not self.closed:
            r = await self.bus.replay(sid, cursor.sent, epoch, REPLAY_PAGE)
            current = r.epoch
            if not r.recovered:
                recovered, epoch = False, None
                cursor.sent = r.events[0][0] - 1 if r.events else r.offset
            for offset, event in r.events:
                if cursor.on_replayed(offset):
                    await self.push_paced(frame_for(offset, event))
            if len(r.events) < REPLAY_PAGE and not cursor.finish_catch_up():
                break
        return recovered, current

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
        except Exception:
            log.exception("frame from session %s failed", st.session)
            self.node.metrics["error:internal"] += 1
            self.push(P.error_frame(AgentiaError(ErrorCode.INTERNAL, "internal error")).encode())

    async def _dispatch(self, frame: P.ClientFrame, now: float) -> None:
        st = self.state
        if isinstance(frame, P.Ping):
            self.push(P.pong_frame(frame.data).encode())
            return
        if not st.bucket.take(now):
            # A strike only for a client that did not wait as long as it was told to.
            if now < st.retry_at and st.strikes.hit(now):
                self.close_soon(CloseCode.FLOOD, "kept sending while rate limited")
            wait = st.bucket.retry_after_ms()
            st.retry_at = now + wait / 1000
            raise AgentiaError(ErrorCode.RATE_LIMITED, "too many frames, slow down", frame.id,
                               wait)
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
