"""The bridge between a call and the bus: the call is one more client of the session.

A final transcript becomes a turn (``Bus.submit``, ``source="voice"``), which the agent workers
run like any chat turn, in the same conversation. The voice worker is a node of the session
(one :class:`sessions.membership.Membership`, as an edge is), reads its own delivery stream and
streams the turn's ``chunk`` text to the
framework's TTS (sentence by sentence). Barge-in while the turn still runs cancels it. A tool
that runs longer than ``tool_notice_s`` gets a short spoken line ("One moment."), so the caller
does not hear silence; the call's waiting for the caller is a ``state listening`` event.

``TurnFeed`` (voice/turn_feed.py) is the loop-free part: events of one turn in, text to
speak out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from opentelemetry.trace import Span

from agentia import tracing
from agentia.codes import BusUnavailable
from sessions import events as E
from sessions import presence_events
from sessions.membership import Membership
from sessions.roles import ChunkAt, NodeBus
from voice.turn_feed import TurnFeed

log = logging.getLogger("agentia.voice")

TURN_QUEUE = 1_024
"""Live events buffered per turn; beyond it they are dropped and read back from the log."""
TURN_IDLE_S = 330.0
"""A turn with no event for this long is given up (workers time turns out after 300 s)."""
CLOSE_WAIT_S = 5.0
"""How long closing a call waits for its tasks (delivery reader, turns) to stop."""
CHUNK = -1
"""The offset a turn's listener gets a ``chunk`` with (chunks have none; 0 wakes it)."""


class _Listener:
    """Live events of one turn, bounded; an overflow asks the reader to go back to the log."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue(TURN_QUEUE)
        self.overflow = False

    def put(self, offset: int, event: dict[str, Any]) -> None:
        try:
            self.queue.put_nowait((offset, event))
        except asyncio.QueueFull:
            self.overflow = True

    def back_to_log(self) -> None:
        """Make the reader go back to the log now (woken by an offset it skips)."""
        self.overflow = True
        with contextlib.suppress(asyncio.QueueFull):  # full: the reader is awake anyway
            self.queue.put_nowait((0, {}))


class VoiceBridge:
    """One call's view of one session: submit turns, stream back their replies."""

    def __init__(self, bus: NodeBus, session: str, user: str, node_id: str | None = None,
                 tool_notice_s: float = 1.5) -> None:
        self.bus = bus
        self.tool_notice_s = tool_notice_s
        self.agent = ""
        """The session's agent as its last event named it ("" before any did)."""
        self.session = session
        self.user = user
        self.node = node_id or f"voice-{uuid.uuid4().hex[:12]}"
        self.membership = Membership(bus, self.node, self, "voice node")
        self.epoch = ""
        self._turns: dict[int, _Listener] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.hanging_up = False
        """Set when the call ends (caller left, worker lost): a turn whose reply stream is torn
        down then is left to finish (chat clients get the reply), not cancelled."""
        self._asking: dict[int, TurnFeed] = {}
        """Turns this call submitted whose reply is being followed (a barge-in cancels them)."""
        self.speaking_turn: int | None = None
        """The turn whose reply text was handed to the speech last (transcripts name it)."""
        self.on_chat_turn: Callable[[int], None] | None = None
        """Called with the offset of each turn typed by a chat client of the session while
        the call is up (the worker speaks its reply in the call)."""
        self.trace: Span | None = None
        """The call's span (voice/call_trace.py), None when tracing is off."""
        self._captions = asyncio.Lock()
        """Orders the caller's interim transcripts and final ones as they are sent."""

    async def start(self) -> None:
        """Open (or check) the session as its owner and start reading our delivery stream."""
        info = await self.bus.open_session(self.session, self.user, self.node)
        self.epoch = info.epoch
        await self.membership.beat()
        self._spawn(self.membership.deliver_forever())
        self._spawn(self.membership.heartbeat_forever(beaten=True))
        # after the beat: a fan-out that found our node without a heartbeat would drop it
        await presence_events.call_changed(self.bus, self.session)

    async def close(self) -> None:
        self.membership.stopping = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:  # bounded: a task that does not end on cancel must not hang the call's end
            _done, stuck = await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)
            if stuck:
                log.warning("call of session %s: %d task(s) did not stop within %.0f s of "
                            "the call's end; left behind", self.session, len(stuck),
                            CLOSE_WAIT_S)
        with contextlib.suppress(BusUnavailable):
            await self.bus.unregister(self.session, self.node)
            await self.membership.leave()
        await presence_events.call_changed(self.bus, self.session)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task of the call (cancelled when the bridge closes)."""
        self._spawn(coro)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def ask(self, text: str, client_id: str) -> AsyncIterator[str]:
        """Submit ``text`` as a voice turn; yield the reply text as it streams.

        Closing the iterator before the turn ends (barge-in) cancels the turn, unless the call
        is hanging up.
        """
        with tracing.use(self.trace):  # the turn entry carries the call's trace context
            submit = asyncio.ensure_future(self.bus.submit(
                self.session, client_id, text, user=self.user, source="voice"))
        try:
            sub = await asyncio.shield(submit)
        except asyncio.CancelledError:  # closed while submitting (a preemptive turn the
            if not self.hanging_up:     # caller spoke on after): the turn may be stored
                self._spawn(self._cancel_submitted(submit))
            raise
        async for said in self.follow(sub.offset, cancel_on_close=True):
            yield said

    async def follow(self, turn: int, *, cancel_on_close: bool = False) -> AsyncIterator[str]:
        """The text to speak for ``turn`` (from its user event on), as it streams.

        Closing the iterator early cancels the turn only with ``cancel_on_close``: a caller
        talking over the reply to a turn typed in chat silences it without cancelling it.
        """
        feed = TurnFeed(turn)
        if cancel_on_close:
            self._asking[turn] = feed
        listener = self._turns[turn] = _Listener()
        last, from_log = turn, True  # events appended before we listened are in the log
        try:
            while not feed.done:
                if from_log or listener.overflow:
                    from_log = listener.overflow = False
                    async for off, event in self._from_log(last):
                        last = off
                        if said := feed.on_event(event, time.monotonic()):
                            self.speaking_turn = turn
                            yield said
                    if said := await self._partial(feed):
                        self.speaking_turn = turn
                        yield said
                    continue
                got = await self._next(listener, feed)
                if got is None:
                    self.speaking_turn = turn
                    yield feed.notice()
                    continue
                off, event = got
                if off == CHUNK:
                    said = feed.on_event(event)
                    if feed.behind:  # the partial buffer has this chunk's text by now
                        feed.behind = False
                        said = await self._partial(feed)
                    if said:
                        self.speaking_turn = turn
                        yield said
                elif off > last:
                    last = off
                    if said := feed.on_event(event, time.monotonic()):
                        self.speaking_turn = turn
                        yield said
        finally:
            if self._turns.get(turn) is listener:
                del self._turns[turn]
            if self._asking.get(turn) is feed:
                del self._asking[turn]
            if cancel_on_close and not feed.done and not self.hanging_up:
                self._spawn(self._cancel(turn))

    async def _partial(self, feed: TurnFeed) -> str:
        """The text to speak from the session's partial buffer (a turn's text so far, up to
        its last ``PARTIAL_EVERY``-th piece), "" for none."""
        p = None if feed.done else await self.bus.partial(self.session)
        return feed.on_event(E.partial(p.turn, p.attempt, p.seq, p.text)) if p else ""

    def barge_in(self) -> list[int]:
        """The caller spoke over a reply (a final transcript): cancel every turn this call
        asked whose reply is not finished, whatever its audio is doing (playing, paused, or
        silent between two sentences while the reply still streams). Returns those turns."""
        turns = [t for t, feed in self._asking.items() if not feed.done]
        if not self.hanging_up:
            for turn in turns:
                self._spawn(self._cancel(turn))
        return turns

    async def transcript(self, role: str, text: str, final: bool,
                         turn: int | None = None) -> None:
        """Record speech of the call as a ``transcript`` event of the session log. The
        caller's waits for the interim being sent (:meth:`interim`): a client gets every
        interim of an utterance before its final transcript."""
        try:
            if role == "user":
                async with self._captions:
                    await self.bus.append(self.session, E.transcript(text, final, role, turn))
            else:
                await self.bus.append(self.session, E.transcript(text, final, role, turn))
        except BusUnavailable:
            log.warning("could not record a transcript of %s: Redis unavailable", self.session)

    async def interim(self, utterance: str, text: str) -> None:
        """Send the caller's utterance so far to the session's chat clients (an interim
        ``transcript``, off the log: voice/interim.py). Lost if Redis is down: the next
        interim, or the final transcript, replaces it anyway."""
        frame = orjson.dumps(E.interim_transcript(text, utterance))
        try:
            async with self._captions:
                await self.bus.stream_frame(self.session, frame, but=self.node)
        except BusUnavailable:
            log.debug("interim transcript of %s not sent: Redis unavailable", self.session)

    async def _next(self, listener: _Listener,
                    feed: TurnFeed) -> tuple[int, dict[str, Any]] | None:
        """The turn's next live event; None when a tool has run long enough for a notice."""
        wait = feed.notice_in(time.monotonic(), self.tool_notice_s)
        try:
            return await asyncio.wait_for(listener.queue.get(),
                                          TURN_IDLE_S if wait is None else wait)
        except TimeoutError:
            if wait is None:
                raise
            return None

    async def listening(self) -> None:
        """Record that the call waits for the caller (``state listening``, no turn)."""
        try:
            await self.bus.append(self.session, E.state(None, "listening", self.agent))
        except BusUnavailable:
            log.warning("could not record listening in %s: Redis unavailable", self.session)

    async def note(self, state: str, **fields: Any) -> None:
        """Record the call's ``state`` in the session log (a ``call`` event every client of
        the session sees): ``joined``, ``error`` (with ``code``, ``message``), ``ended``."""
        event = E.call(state, self.node, time.time(), **fields)
        try:
            await self.bus.append(self.session, event)
        except BusUnavailable:
            log.warning("could not record call %s of %s: Redis unavailable", state, self.session)

    async def _from_log(self, after: int) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        while True:
            page = await self.bus.replay(self.session, after, None, 500)
            for off, raw in page.events:
                if off > after:
                    after = off
                    yield off, orjson.loads(raw)
            if len(page.events) < 500:
                return

    async def _cancel_submitted(self, submit: asyncio.Future[Any]) -> None:
        with contextlib.suppress(Exception):
            await self._cancel((await submit).offset)

    async def _cancel(self, turn: int) -> None:
        if self.hanging_up:  # the stream was torn down with the call, not interrupted
            return
        try:
            got = await self.bus.cancel(self.session, turn)
            log.info("barge-in: cancel turn %d of %s -> %s", turn, self.session, got or "done")
        except BusUnavailable:
            log.warning("could not cancel turn %d of %s: Redis unavailable", turn, self.session)

    # ------------------------------------------------------------ the membership's handler

    def deliver(self, sid: str, offset: int, raw: bytes) -> None:
        if sid != self.session:
            return
        event = orjson.loads(raw)
        if agent := event.get("agent"):
            self.agent = str(agent)
        if event.get("type") == E.USER and event.get("source") == "chat":
            if self.on_chat_turn is not None:
                self.on_chat_turn(offset)
            return
        listener = self._turns.get(event.get("turn", -1))
        if listener is not None:
            listener.put(offset, event)

    def deliver_chunk(self, sid: str, chunk: ChunkAt, frame: bytes) -> None:
        if sid != self.session:
            return
        listener = self._turns.get(chunk.turn)
        if listener is not None:
            listener.put(CHUNK, orjson.loads(frame))

    def deliver_frame(self, sid: str, frame: bytes) -> None:
        """Off-log frames are for chat clients (this call sends its own, not to itself)."""

    def session_deleted(self, sid: str) -> None:
        # the call's later turns fail (the session is gone); ending the call is its own job
        if sid == self.session:
            log.info("session %s was deleted during its call", sid)

    def stream_back(self) -> None:
        """Events delivered while the stream could not be read may be lost: every turn being
        spoken reads the log again (as an edge's connections do)."""
        for listener in self._turns.values():
            listener.back_to_log()

    async def forgotten(self) -> None:
        info = await self.bus.open_session(self.session, self.user, self.node)
        self.epoch = info.epoch

    def heartbeat_done(self, ok: bool) -> None:
        pass

    def outage(self) -> None:
        pass
