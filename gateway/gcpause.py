"""The edge's garbage collector: its thresholds, and every collection timed into the
``agentia_gc_pause_seconds{generation}`` histogram (``agentia/collector.py``, shared with the
worker).

A collection stops the event loop: every handshake and frame in flight waits for it. CPython's
generational collector walks all tracked objects of the generations it collects, 1-2.5 µs each
on a busy core, and an edge holds ~25 per idle connection with picows, ~70 with websockets
(docs/benchmarks-locust.md, "The gen-1 collection of a storm"). What bounds a pause is
therefore how many objects one collection may walk, which :func:`tune` sets.
"""

from __future__ import annotations

from agentia import collector
from agentia.collector import FULL_EVERY as FULL_EVERY
from agentia.collector import PAUSES as PAUSES
from agentia.collector import SLOW_S as SLOW_S
from agentia.collector import Pauses as Pauses
from agentia.collector import thresholds as thresholds


def tune(gen0: int, gen1: int) -> None:
    """Freeze start-up objects out of every collection, time collections, bound the young
    ones (:func:`agentia.collector.thresholds`; ``gen0`` 0 keeps CPython's; full collections
    at least ``FULL_EVERY`` net allocations apart, so none runs during a storm). Live
    connections are not frozen: a closed one's reference cycles must stay collectable."""
    collector.tune(gen0, gen1, who="edge")
