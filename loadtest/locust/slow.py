"""Locustfile: slow readers. StreamUsers open ``--ws-connections`` connections over
``--ws-sessions`` shared sessions and read the events a publisher appends; in the runner's
``slow`` phase every ``1/--ws-slow-fraction``-th connection stops reading its socket (opened
with a small ``SO_RCVBUF``). The edge must close those with ``4000 SLOW`` while the others keep
their event latency.

    python -m loadtest.locust.run slow --connections 5000 --slow-fraction 0.1

The runner drives the phases through ``<--ws-control>/phase`` (see ``streamuser``).
"""

from __future__ import annotations

from loadtest.locust.streamshape import StreamShape
from loadtest.locust.streamuser import StreamUser

__all__ = ["StreamShape", "StreamUser"]
