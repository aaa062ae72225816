"""The edge's garbage collector: its thresholds, and every collection timed into the
``agentia_gc_pause_seconds{generation}`` histogram.

A collection stops the event loop: every handshake and frame in flight waits for it. CPython's
generational collector walks all tracked objects of the generations it collects, 1-2.5 µs each
on a busy core, and an edge holds ~25 per idle connection with picows, ~70 with websockets
(docs/benchmarks-locust.md, "The gen-1 collection of a storm"). What bounds a pause is
therefore how many objects one collection may walk, which :func:`tune` sets.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from agentia import collector
from agentia import metrics as M
from agentia.collector import FULL_EVERY as FULL_EVERY
from agentia.collector import thresholds as thresholds

log = logging.getLogger("agentia.edge")

SLOW_S = 0.2
"""A collection at least this long is also logged (one line a second at most)."""


class Pauses:
    """A ``gc.callbacks`` hook: the clock read at start and stop, the pause kept in a bounded
    list that :meth:`flush` moves into the histogram from the event loop (a callback may run
    inside any allocation, even one holding prometheus_client's lock: it must not observe)."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
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
            log.warning("garbage collection of generation %d stopped the edge for %.0f ms "
                        "(%d collections this second)", gen, longest * 1000, len(taken))

    async def forever(self, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            self.flush()


PAUSES = Pauses()


def tune(gen0: int, gen1: int) -> None:
    """Freeze start-up objects out of every collection, time collections, bound the young
    ones (:func:`agentia.collector.thresholds`; ``gen0`` 0 keeps CPython's; full collections
    at least ``FULL_EVERY`` net allocations apart, so none runs during a storm). Live
    connections are not frozen: a closed one's reference cycles must stay collectable."""
    collector.tune(gen0, gen1)
    if PAUSES not in gc.callbacks:
        gc.callbacks.append(PAUSES)
