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
"""

from __future__ import annotations

import gc

FULL_EVERY = 22_000_000
"""Net allocations between full collections, at least (CPython also waits until a quarter of
the old generation is new). A full collection walks every live object (for an edge: every
connection, 1.5-2.5 s at 18,000 on a busy box); this keeps them as rare as the 50,000/20/20
thresholds did, whatever the young thresholds."""


def thresholds(gen0: int, gen1: int) -> tuple[int, int, int]:
    """CPython's three thresholds. A gen-0 collection walks ~``gen0`` objects; a gen-1 one
    ~``(gen1 + 2) * gen0``: the survivors of ``gen1 + 1`` gen-0 collections and the youngest
    (CPython collects gen 1 once its count *exceeds* the threshold)."""
    return gen0, gen1, max(10, FULL_EVERY // ((gen1 + 2) * gen0))


def tune(gen0: int, gen1: int) -> None:
    """Freeze what exists now out of every collection (call it once start-up is done), and
    bound the young collections (:func:`thresholds`; ``gen0`` 0 keeps CPython's). Objects
    made later are not frozen: their reference cycles stay collectable."""
    gc.freeze()
    if gen0 > 0:
        gc.set_threshold(*thresholds(gen0, gen1))
