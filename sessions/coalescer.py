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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import orjson

from sessions import events as E
from sessions import keys as K
from sessions.roles import WorkerBus

BUSY_STREAMS = 250
"""Turns streaming at once up to which the tick is ``coalesce_ms`` (an interactive pace)."""
BUSY_MAX_S = 0.1
"""The longest tick (and model read pacing) when busy, seconds."""
CARRY_WAIT_MAX_S = BUSY_MAX_S
"""The longest tick a turn's ending waits for (:meth:`ChunkFlusher.carry`): with a longer
``coalesce_ms`` it is sent at once, with the text still waiting."""
START_WAIT_MAX_S = 0.01
"""A turn's ``START`` riding a tick (:meth:`ChunkFlusher.carry_start`) waits for it when it is
due within this many seconds; else the tick is sent at once, early, and the next one is
``coalesce_ms`` after it."""

_PUSHED_MAX = 16
"""Early ticks a tick's wait follows at most (a few per window at hundreds of turns a second)."""


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
        """Ticks sent at once (:meth:`carry` with a long ``interval``, :meth:`carry_start`)."""
        self._due = 0.0
        """When the running ticker sends its next tick (the loop's clock): an early tick
        (:meth:`carry_start`) pushes it back by a whole window."""

    def want(self, co: Coalescer) -> None:
        """``co`` has text waiting: send it at the next tick."""
        self._waiting[id(co)] = co
        if self._ticker is None:
            self._ticker = asyncio.create_task(self._tick())

    def carry(self) -> None:
        """A turn's ending rides the next tick (sessions/deferred_appends.py ``_ride_tick``):
        that tick is sent even if no text waits. Call it in the same step as the ending is
        handed to the bus (no await between), so the tick cannot pass without it. A tick
        longer than :data:`CARRY_WAIT_MAX_S` is not waited for: one is sent at once."""
        self._carry = True
        if self.interval > CARRY_WAIT_MAX_S:
            self._send_now(self.flush())
        elif self._ticker is None:
            self._ticker = asyncio.create_task(self._tick())

    def carry_start(self) -> None:
        """A turn's ``START`` rides a tick (sessions/deferred_appends.py ``_ride_start``; the
        same step as it is handed over, as :meth:`carry`): the next one when it is due within
        :data:`START_WAIT_MAX_S`, else one sent now, early, with whatever text waits (the next
        tick then comes a whole window after it). Other turns streaming, that is one round
        trip of the worker, one reply and one wake-up of each node's delivery read fewer than
        ``START`` apart; a tick in flight (the lock), the ``START``s handed over meanwhile go
        together in the next (turns that start together: a round trip for all of them)."""
        self._carry = True
        # a ticker sleeping until a tick due soon sends it; one gone or sending now does not
        if not 0 < self._due - asyncio.get_running_loop().time() <= START_WAIT_MAX_S \
                or self._ticker is None:
            self._send_now(self._early())

    def _send_now(self, tick: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(tick)
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _early(self) -> None:
        await self.flush()
        self._due = asyncio.get_running_loop().time() + busy_window(self.interval, self._last)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting or self._carry:
                self._due = loop.time() + busy_window(self.interval, self._last)
                for _ in range(_PUSHED_MAX):  # an early tick (carry_start) pushes it back
                    if (left := self._due - loop.time()) <= 0.001:
                        break
                    await asyncio.sleep(left)
                await self.flush()
        finally:
            self._ticker = None

    async def flush(self) -> None:
        """Send every piece waiting now, in one pipeline (one batch at a time, so the pieces of
        one turn reach Redis in order). A failure is kept by each turn of the batch, which
        raises it at its own next :meth:`Coalescer.flush`."""
        async with self._lock:
            batch = list(self._waiting.values())
            self._waiting.clear()
            self._last = len(batch)
            pieces = [p for co in batch if (p := co.take()) is not None]
            carry, self._carry = self._carry, False
            if not pieces and not carry:
                return
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
