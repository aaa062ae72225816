"""CPython's garbage collector for a long-running process (the edge and the agent worker):
start-up objects frozen out of every collection, and young collections bounded.

A collection walks every tracked object of the generations it collects, 1-2.5 µs each on a
busy core. What a process imports (the Agents SDK, the OpenAI client, pydantic: ~200,000
objects in a worker) would otherwise be walked again by every full collection (one per ~300
demo turns of a worker), and CPython's default thresholds (700, 10, 10) run a young collection
every 700 net allocations, walking and promoting what the turns in flight hold across an
await: a third of a worker's CPU per short turn in perf on a saturated box (what it saves
depends on the load: docs/benchmarks.md, session 15). Cycles are still collected; they wait a
little longer.

Each collection is also timed into ``agentia_gc_pause_seconds{generation}`` (:class:`Pauses`,
moved there by the process's :meth:`Pauses.forever` task): a collection stops the event loop.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from agentia import metrics as M

log = logging.getLogger("agentia.gc")

FULL_EVERY = 22_000_000
"""Net allocations between full collections, at least (CPython also waits until a quarter of
the old generation is new). A full collection walks every live object (for an edge: every
connection, 1.5-2.5 s at 18,000 on a busy box); this keeps them as rare as the 50,000/20/20
thresholds did, whatever the young thresholds."""


SLOW_S = 0.2
"""A collection at least this long is also logged (one line a second at most)."""


class Pauses:
    """A ``gc.callbacks`` hook: the clock read at start and stop, the pause kept in a bounded
    list that :meth:`flush` moves into the histogram from the event loop (a callback may run
    inside any allocation, even one holding prometheus_client's lock: it must not observe)."""

    def __init__(self, limit: int = 4096, who: str = "process") -> None:
        self.limit = limit
        self.who = who
        """What the slow-collection line says was stopped (``edge``, ``worker``)."""
        self.pending: list[tuple[int, float]] = []
        self.dropped = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif len(self.pending) < self.limit:
            self.pending.append((info["generation"], time.perf_counter() - self._started))
        else:
            self.dropped += 1

    def flush(self) -> None:
        """Observe what was recorded since the last call; log the longest if slow."""
        taken, self.pending = self.pending, []
        for gen, pause in taken:
            M.GC_PAUSE.labels(str(gen)).observe(pause)
        gen, longest = max(taken, key=lambda t: t[1], default=(0, 0.0))
        if longest >= SLOW_S:
            log.warning("garbage collection of generation %d stopped the %s for %.0f ms "
                        "(%d collections this second)", gen, self.who, longest * 1000, len(taken))

    async def forever(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush()


def thresholds(gen0: int, gen1: int) -> tuple[int, int, int]:
    """CPython's three thresholds. A gen-0 collection walks ~``gen0`` objects; a gen-1 one
    ~``(gen1 + 2) * gen0``: the survivors of ``gen1 + 1`` gen-0 collections and the youngest
    (CPython collects gen 1 once its count *exceeds* the threshold)."""
    return gen0, gen1, max(10, FULL_EVERY // ((gen1 + 2) * gen0))


PAUSES = Pauses()
"""The process's timer of its collections (one per process: ``gc.callbacks`` is global)."""


def tune(gen0: int, gen1: int, who: str = "process") -> None:
    """Freeze what exists now out of every collection (call it once start-up is done), bound
    the young collections (:func:`thresholds`; ``gen0`` 0 keeps CPython's) and time every
    collection (:data:`PAUSES`; the process runs ``PAUSES.forever()``). Objects made later are
    not frozen: their reference cycles stay collectable."""
    gc.freeze()
    if gen0 > 0:
        gc.set_threshold(*thresholds(gen0, gen1))
    PAUSES.who = who
    if PAUSES not in gc.callbacks:
        gc.callbacks.append(PAUSES)
