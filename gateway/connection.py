"""One client connection: the executor of its :class:`SessionProtocol`'s actions.

The decisions (what a frame means, strikes, rate limits, the cursor, the send budget) are
made by ``gateway/session_protocol.py``, loop-free; this module does the I/O they ask for:
bus calls, socket writes, closes. The send side (outbox, writer, send budget, stall rule,
close) is :class:`gateway.sender.Sender`'s, which this class extends.
"""

from __future__ import annotations

import asyncio
import logging
import time

from agentia.codes import AgentiaError, BusUnavailable
from agentia.logs import Throttle
from gateway import drops as D
from gateway import protocol as P
from gateway import session_protocol as S
from gateway.host import Host
from gateway.sender import Sender
from gateway.traced import receive_span
from sessions.roles import ChunkAt, Partial

log = logging.getLogger("agentia.edge")
_THROTTLE = Throttle(60.0)


class Connection(Sender):
    """One client connection (the send side is :class:`Sender`'s)."""

    __slots__ = ("filler",)

    def __init__(self, node: Host, state: S.SessionProtocol) -> None:
        super().__init__(node, state)
        self.filler: asyncio.Task[object] | None = None

    # ------------------------------------------------------------ executing actions

    def execute(self, action: S.Action | None) -> None:
        """Run an action that needs no waiting (a replay in the background)."""
        if action is None:
            return
        if isinstance(action, S.Write):
            if not action.droppable:
                self.push(action.frame)
            elif not self.offer(action.frame):
                self.state.on_dropped(D.PARTIAL)
        elif isinstance(action, S.Close):
            self.close_soon(action.code, action.reason)
        elif isinstance(action, S.Replay) and action.frame is None:
            if self.filler is None:
                self.filler = self.node.spawn(self._fill(action))
        elif isinstance(action, S.ReadPartial):
            self.node.spawn(self._catch_up_chunks())
        else:
            raise TypeError(f"{action!r} must be awaited: use perform()")

    async def perform(self, actions: list[S.Action], now: float) -> None:
        """Run actions in order, awaiting bus calls; their outcomes go back to the protocol."""
        for action in actions:
            if isinstance(action, S.Write | S.Close) or action == S.FILL:
                self.execute(action)
            elif isinstance(action, S.ReadPartial):
                for write in await self._read_partial():
                    self.execute(write)
            else:
                await self.perform(await self._call(action, now), now)

    async def _call(self, action: S.Submit | S.CancelTurn | S.ApproveCall | S.Replay,
                    now: float) -> list[S.Action]:
        st = self.state
        try:
            if isinstance(action, S.Submit):
                f = action.frame
                if st.operator:  # an operator speaks in the session: a message, not a turn
                    offset, dup = await self.node.post_operator(st.session, f.text, st.user,
                                                                f.id)
                    return st.on_submitted(f, offset, dup)
                if self.node.traced is not None:
                    return await self._submit_traced(f, now)
                await self.node.check_overload(st.session, f.id, st.agent)
                res = await self.node.bus.submit(st.session, f.id, f.text, user=st.user)
                return st.on_submitted(f, res.offset, res.duplicate)
            if isinstance(action, S.CancelTurn):
                turn = await self.node.bus.cancel(st.session, action.frame.turn)
                return st.on_cancelled(action.frame, turn, now)
            if isinstance(action, S.ApproveCall):
                a = action.frame
                offset = await self.node.bus.approve(st.session, a.call_id, a.approved,
                                                     by=st.user, message=a.message)
                return st.on_approved(a, offset)
            return await self._resume(action)
        except Exception as exc:
            if not isinstance(exc, AgentiaError):
                self._log_internal(exc)
            return st.on_failure(exc, action.frame, now)

    async def _submit_traced(self, f: P.Send, now: float) -> list[S.Action]:
        """A ``send`` under its ``edge.receive`` span (the turn entry carries its context),
        the ack written inside it."""
        st, traced = self.state, self.node.traced
        assert traced is not None
        with receive_span(st.session, f.id) as span:
            await self.node.check_overload(st.session, f.id, st.agent)
            res = await self.node.bus.submit(st.session, f.id, f.text, user=st.user)
            span.set_attributes({"agentia.turn": res.offset, "agentia.duplicate": res.duplicate})
            if not res.duplicate:  # a resent send: its turn is traced (or ended) already
                traced.received(st.session, res.offset)
            await self.perform(st.on_submitted(f, res.offset, res.duplicate), now)
        return []

    async def _partial(self) -> Partial | None:
        """The running turn's text so far (None: none, or unreadable)."""
        try:
            return await self.node.bus.partial(self.state.session)
        except BusUnavailable:
            return None
        except Exception as exc:
            self._log_internal(exc)
            return None

    async def _read_partial(self) -> list[S.Action]:
        """The running turn's text so far, for the protocol (which decides what to write)."""
        return self.state.on_partial(await self._partial())

    async def _catch_up_chunks(self) -> None:
        """A chunk came out of order (joined mid-turn, or chunks were skipped while the log
        was replayed): write the partial instead, then the chunks after it."""
        for action in await self._read_partial():
            self.execute(action)

    def _log_internal(self, exc: Exception) -> None:
        """An unexpected failure, logged once a minute per exception type."""
        held = _THROTTLE.allow(type(exc))
        if held is not None:
            log.error("frame from session %s failed (%d more of this kind in the last minute "
                      "not logged)", self.state.session, held, exc_info=exc)

    # ------------------------------------------------------------ session events

    def on_chunk(self, at: ChunkAt, frame: bytes) -> None:
        action = self.state.on_chunk(at, frame)
        if isinstance(action, bytes):
            if not self.offer(action):
                self.state.on_dropped(D.CHUNK)
        elif action is not None:
            self.execute(action)

    def on_live_frame(self, frame: bytes) -> None:
        """An off-log frame of the session (an interim transcript): dropped like a chunk."""
        if self.state.on_live_frame() and not self.offer(frame):
            self.state.on_dropped(D.TRANSCRIPT)

    def on_live(self, offset: int, frame: bytes) -> None:
        action = self.state.on_event(offset, frame)
        if isinstance(action, bytes):  # the hot path of fan-out: one event, one connection
            if self.closed:
                return
            if self._refusal(len(action), optional=True) is None:
                self._queue(action)
            else:  # over the budget: the log holds it, a paced fill brings it (not SLOW)
                self.execute(self.state.on_behind(offset))
        else:
            self.execute(action)

    def opened(self, welcome: bytes, epoch: str, offset: int) -> None:
        """The node opened the session: welcome the client, fill what came meanwhile."""
        for action in self.state.on_opened(welcome, epoch, offset):
            self.execute(action)

    def refill(self) -> None:
        """The node's delivery stream was unreadable for a while: re-read the log."""
        if self.filler is None:
            self.execute(self.state.on_delivery_lost())

    def reopened(self, epoch: str, offset: int) -> None:
        """The node registered the session again after Redis forgot it."""
        self.execute(self.state.on_reopened(epoch, offset))

    async def _fill(self, action: S.Replay) -> None:
        try:
            self.state.begin_replay(action)
            await self._replay()
        except BusUnavailable:
            self.state.on_replay_failed()  # the next live event retries
        finally:
            self.filler = None

    async def _resume(self, action: S.Replay) -> list[S.Action]:
        if self.filler is not None:
            await self.filler  # one replay at a time per connection
        self.state.begin_replay(action)
        try:
            return await self._replay()
        except BusUnavailable:
            self.state.on_replay_failed()
            raise

    async def _replay(self) -> list[S.Action]:
        """Page through the log as the protocol asks; returns the replay's last actions."""
        st = self.state
        while not self.closed and (req := st.replay_request()) is not None:
            r = await self.node.bus.replay(st.session, req.after, req.epoch, req.count)
            for write in st.on_replay_page(r.events, r.recovered, r.epoch, r.offset):
                await self.push_paced(write.frame)
            done = st.page_written()
            if isinstance(done, S.ReadPartial):  # a resume's log is written: its answer's end
                done = st.resume_ends(await self._partial())
            if done is not None:
                return done
        return []

    # ------------------------------------------------------------ frames in

    async def on_frame(self, raw: str | bytes) -> None:
        now = time.monotonic()
        try:
            await self.perform(self.state.receive(raw, now), now)
        except Exception as exc:  # a bug must cost the client a strike, not the connection
            self._log_internal(exc)
            await self.perform(self.state.on_failure(exc, None, now), now)

    def on_ws_ping(self) -> bool:
        """A WebSocket PING arrived: True to answer it. Over the allowance: close FLOOD."""
        if self.closed:
            return False
        refusal = self.state.on_ws_ping(time.monotonic())
        self.execute(refusal)
        return refusal is None
