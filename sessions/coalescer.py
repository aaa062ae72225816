"""A turn's reply text, coalesced: one ``chunk`` per ``coalesce_ms`` of output, not one per
token (docs/protocol.md ``chunk``). Chunks go to the run's partial buffer and the nodes' delivery
streams, not to the session log: the log gets the whole text once, in the turn's ``reply``.

One :class:`ChunkFlusher` per worker sends the pieces of *every* running turn together: each tick
(``coalesce_ms``) is one pipeline, however many turns run. Per-turn timers sending a small
pipeline each cost Redis a read, a reply and a wake-up of the edge's blocked XREAD per piece;
batched, Redis and the edge handle hundreds of pieces per round trip (docs/architecture.md).

**Busy**: with more than :data:`BUSY_STREAMS` turns streaming at once the tick is longer
(:func:`busy_window`: ``coalesce_ms`` * turns / :data:`BUSY_STREAMS`, at most
:data:`BUSY_MAX_S`): a worker at a thousand streams sends a piece per turn every 100 ms, not
every 40, and the lean model's stream is read at the same pace (sessions/lean_model.py), so
the per-read and per-piece work is spread over more tokens when the CPU is short. Clients see
larger, rarer ``chunk`` frames (docs/protocol.md); the text is the same.

**A turn's first piece goes at once** (:meth:`ChunkFlusher.want`): the first text of a run
does not wait for the tick (up to ``coalesce_ms``: the time to first text of every turn, and a
voice call's answer, waited for it); the worker sends an extra tick at once, which carries
whatever waits then, and the rest of the turn is coalesced as before. At most one such tick is
waiting at a time, and none when busy: one round trip more a turn at most. It gathers for
:data:`FIRST_GATHER_S` first (session 19): the first pieces of the turns that start meanwhile,
and the endings of turns that end meanwhile (a short reply's, which then needs no tick of its
own), go in the same round trip.

**A tick is due** :meth:`ChunkFlusher._due` **after the last one sent**, whatever sent it (the
ticker, a first piece's tick, a turn's own flush before a log event): each takes every piece
waiting, so the next regular tick need not come sooner for anyone's text to keep its pace.
Until session 19 the ticker kept its own phase, and a first piece's tick was one wake-up of
Redis more (and of each edge's read): up to one a turn, ~6 a second at 40 sessions.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import orjson

from sessions import events as E
from sessions import keys as K
from sessions.roles import WorkerBus

BUSY_STREAMS = 250
"""Turns streaming at once up to which the tick is ``coalesce_ms`` (an interactive pace)."""
BUSY_MAX_S = 0.1
"""The longest tick (and model read pacing) when busy, seconds."""
FIRST_GATHER_S = 0.002
"""How long a tick sent for a first piece waits before it takes its batch (issue 13, session
19): at 1,000 short turns/s each turn's first piece was a round trip of its own, and its
ending (~0.3-0.7 ms later for a reply the model gives at once) waited for the next tick."""
CARRY_WAIT_MAX_S = BUSY_MAX_S
"""The longest tick a turn's ending waits for (:meth:`ChunkFlusher.carry`): with a longer
``coalesce_ms`` it is sent at once, with the text still waiting."""


def busy_window(base: float, streams: int) -> float:
    """The tick (or read pacing) of ``base`` seconds with ``streams`` turns streaming: ``base``
    up to :data:`BUSY_STREAMS`, then longer in proportion, at most :data:`BUSY_MAX_S` (never
    shorter than ``base``)."""
    if streams <= BUSY_STREAMS or base >= BUSY_MAX_S:
        return base
    return min(BUSY_MAX_S, base * streams / BUSY_STREAMS)


Piece = tuple[str, str, int, bytes, str]
"""(session, run id, seq, the chunk frame, the text for the partial buffer): one reply piece as
the bus streams it. The last is empty except on every ``PARTIAL_EVERY``-th piece, which carries
the text of the pieces since the previous one (sessions/keys.py)."""


class ChunkFlusher:
    """Streams the waiting pieces of every running turn of one worker, one pipeline a tick."""

    def __init__(self, bus: WorkerBus, interval: float) -> None:
        self.bus = bus
        self.interval = interval
        self._waiting: dict[int, Coalescer] = {}
        self._lock = asyncio.Lock()
        self._ticker: asyncio.Task[None] | None = None
        self._last = 0
        """Turns the last tick sent pieces of (the busy window's measure)."""
        self._carry = False
        """A turn's ending waits for the next tick (:meth:`carry`): it runs even without
        pieces."""
        self._sending: set[asyncio.Task[None]] = set()
        """Ticks sent at once: for an ending (:meth:`carry`, a long ``interval``) or a turn's
        first piece (:meth:`want`)."""
        self._first = False
        """A tick sent at once for a first piece has not yet taken its batch."""
        self._sent_at = 0.0
        """When the last tick that sent anything took its batch (loop time): the next regular
        one is due a window after it (:meth:`_due`)."""

    def want(self, co: Coalescer) -> None:
        """``co`` has text waiting: send it at the next tick, or at once if it is the run's
        first piece (none taken yet) and the worker is not busy (one tick at once waiting at
        a time: it takes every first piece that comes before it runs)."""
        self._waiting[id(co)] = co
        if co.seq == 0 and not self._first and self._last <= BUSY_STREAMS:
            self._first = True
            self._send_now(measure=False, gather=min(FIRST_GATHER_S, self.interval))
        if self._ticker is None:
            self._start_ticker()

    def _start_ticker(self) -> None:
        self._sent_at = max(self._sent_at, asyncio.get_running_loop().time())
        self._ticker = asyncio.create_task(self._tick())

    def _send_now(self, measure: bool = True, gather: float = 0.0) -> None:
        task = asyncio.create_task(self._flush(measure, gather))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def carry(self) -> None:
        """A turn's ending rides the next tick (sessions/deferred_appends.py ``_ride_tick``):
        that tick is sent even if no text waits. Call it in the same step as the ending is
        handed to the bus (no await between), so the tick cannot pass without it. A tick
        longer than :data:`CARRY_WAIT_MAX_S` is not waited for: one is sent at once."""
        self._carry = True
        if self.interval > CARRY_WAIT_MAX_S:
            self._send_now()
        elif self._ticker is None:
            self._start_ticker()

    async def _tick(self) -> None:
        """Ticks until nothing waits. The first one is a tick after the ticker started even if
        what started it was sent at once meanwhile (a first piece, :meth:`want`): the turn's
        next piece goes then, not a tick after it came."""
        try:
            while True:
                await self._due()
                await self.flush()
                if not (self._waiting or self._carry):
                    return
        finally:
            self._ticker = None

    async def _due(self) -> None:
        """Sleep until a window after the last tick sent (by the ticker or any other)."""
        loop = asyncio.get_running_loop()
        while True:  # a tick sent meanwhile moves the deadline
            wait = self._sent_at + busy_window(self.interval, self._last) - loop.time()
            if wait <= 0:
                return
            await asyncio.sleep(wait)

    async def flush(self) -> None:
        """Send every piece waiting now, in one pipeline (one batch at a time, so the pieces of
        one turn reach Redis in order). A failure is kept by each turn of the batch, which
        raises it at its own next :meth:`Coalescer.flush`."""
        await self._flush()

    async def _flush(self, measure: bool = True, gather: float = 0.0) -> None:
        """:meth:`flush`; ``measure``: its batch's size is the busy window's measure (not for
        a first piece's tick, which would make a busy worker's next tick look idle);
        ``gather``: seconds to wait before taking the batch (a first piece's tick)."""
        if gather:
            await asyncio.sleep(gather)
        async with self._lock:
            batch = list(self._waiting.values())
            self._waiting.clear()
            self._first = False  # any first piece waiting goes in this batch
            if measure:
                self._last = len(batch)
            pieces = [p for co in batch if (p := co.take()) is not None]
            carry, self._carry = self._carry, False
            if not pieces and not carry:
                return
            self._sent_at = asyncio.get_running_loop().time()
            try:
                await self.bus.stream_chunks(pieces)
            except Exception as exc:
                for co in batch:
                    co.failed = exc


@dataclass(slots=True, eq=False)
class Coalescer:
    """The text of one run of a turn: what it produced, and what waits for the next tick."""

    flusher: ChunkFlusher
    sid: str
    turn: int
    attempt: int
    run_id: str
    """``<turn>:<attempt>:<nonce>``, as the turn_start of this run started the buffer."""
    seq: int = 0
    parts: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    first_at: float = 0.0
    failed: BaseException | None = None
    unbuffered: list[str] = field(default_factory=list)
    """The text of pieces sent since the last one that went to the partial buffer."""

    def add(self, delta: str) -> None:
        if not self.text:
            self.first_at = time.time()
        self.parts.append(delta)
        self.text.append(delta)
        self.flusher.want(self)

    def take(self) -> Piece | None:
        """The waiting text as the run's next piece (None if nothing waits)."""
        if not self.parts:
            return None
        text, self.parts = "".join(self.parts), []
        self.seq += 1
        frame = orjson.dumps(E.chunk(self.turn, self.attempt, self.seq, text))
        self.unbuffered.append(text)
        buffered = ""
        if self.seq % K.PARTIAL_EVERY == 0:
            buffered, self.unbuffered = "".join(self.unbuffered), []
        return self.sid, self.run_id, self.seq, frame, buffered

    async def flush(self) -> None:
        """Send what waits now, after any batch in flight (before a log event of the turn:
        the turn's pieces must reach Redis before it). Shielded: cancelling this turn must not
        cut short a batch that carries other turns' pieces."""
        await asyncio.shield(self.flusher.flush())
        if self.failed is not None:
            raise self.failed
