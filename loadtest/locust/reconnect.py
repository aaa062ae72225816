"""Locustfile: a reconnect storm. StreamUsers open ``--ws-connections`` connections over
``--ws-sessions`` shared sessions and read the events a publisher appends; the runner kills one
edge process; its clients reconnect (the same port: SO_REUSEPORT hands them to the live
processes) and resume from their last offset; at the end every lineage reports the offsets it
received, which the runner compares with the session logs in Redis.

    python -m loadtest.locust.run reconnect --connections 20000 --edges 4

The runner drives the phases through ``<--ws-control>/phase`` (see ``streamuser``); run by
hand, the run ramps, holds and stops after ``--ws-max-seconds``.
"""

from __future__ import annotations

from loadtest.locust.streamshape import StreamShape
from loadtest.locust.streamuser import StreamUser

__all__ = ["StreamShape", "StreamUser"]
