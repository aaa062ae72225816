"""A turn's reply text, coalesced: one ``chunk`` per ``coalesce_ms`` of output, not one per
token (docs/protocol.md ``chunk``). Chunks go to the run's partial buffer and the nodes' delivery
streams, not to the session log: the log gets the whole text once, in the turn's ``reply``."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field

import orjson

from sessions import events as E
from sessions.roles import WorkerBus

log = logging.getLogger("agentia.worker")


@dataclass(slots=True)
class Coalescer:
    """Buffers deltas and streams them as chunks at most every ``interval`` seconds."""

    bus: WorkerBus
    sid: str
    turn: int
    attempt: int
    run_id: str
    """``<turn>:<attempt>:<nonce>``, as the turn_start of this run started the buffer."""
    interval: float
    seq: int = 0
    parts: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    first_at: float = 0.0
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    """Appends of one turn go out one at a time, in order (the timer and the turn both flush)."""

    def add(self, delta: str) -> None:
        if not self.text:
            self.first_at = time.time()
        self.parts.append(delta)
        self.text.append(delta)

    async def flush(self) -> None:
        async with self.lock:
            if self.parts:
                text, self.parts = "".join(self.parts), []
                self.seq += 1
                event = orjson.dumps(E.chunk(self.turn, self.attempt, self.seq, text))
                await self.bus.stream_chunk(self.sid, self.run_id, self.seq, event, text)

    async def run(self) -> None:
        """Flush every ``interval`` until :meth:`stop`. Stopped by a flag, not by cancelling:
        a cancel that lands inside a Redis call was seen to get lost and hang the turn."""
        while not self.stopped.is_set():
            with suppress(TimeoutError):
                await asyncio.wait_for(self.stopped.wait(), self.interval)
            await self.flush()

    async def stop(self, task: asyncio.Task[None]) -> None:
        self.stopped.set()
        try:
            await asyncio.wait_for(task, 10 + self.interval)
        except TimeoutError:
            log.error("the delta flusher of %s/%s did not stop", self.sid, self.turn)
