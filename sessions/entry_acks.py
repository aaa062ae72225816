"""Acks of shard entries whose session the worker runs already, sent together (issue 13,
session 16).

An entry says only "session S has a turn" (sessions/worker.py). One read while this worker runs
S needs no task: the running loop will see the turn (the worker marks S *poked*, in case the
loop is just releasing), and the entry is acked. Under a backlog that is most entries (a
session's next turn is queued while its last one runs), and each was a task of its own, a slot
of ``concurrency`` and an ``XACK`` round trip. Here they wait in a list and one task sends
them: one ``XACK`` per shard for all the entries that came meanwhile (``TurnQueue.ack_all``).
The other entries a session task acks on its own go the same way: one whose START found the
lock another worker's (``busy``: the holder runs the turn), one whose turns had all ended.
An entry acked with a turn's ending is not one of them (that ack is in the ending's script).

Bounded: at most ``concurrency`` entries are claimed per read, and a batch is sent before the
next waits longer than one round trip. Nothing is lost by acking late or not at all: an entry
not acked (an outage, the worker killed) stays in the worker's pending list and is reclaimed
after a lease, and a reclaimed entry of a session with no turn pending only looks and goes.
"""

from __future__ import annotations

import asyncio
import logging

from sessions.roles import Claimed, TurnQueue

log = logging.getLogger("agentia.worker")

CLOSE_S = 2.0
"""At a stop, how long the last batch may take (then it is left to be reclaimed)."""


class EntryAcks:
    """The entries waiting for their ack, and the one task that sends them."""

    def __init__(self, queue: TurnQueue) -> None:
        self.queue = queue
        self.waiting: list[Claimed] = []
        self.task: asyncio.Task[None] | None = None
        self.sent = 0
        """Entries acked so far (tests, counters)."""

    def add(self, claim: Claimed) -> None:
        """Ack ``claim`` soon, with the others that come meanwhile."""
        self.waiting.append(claim)
        if self.task is None:
            self.task = asyncio.create_task(self._send())

    async def _send(self) -> None:
        try:
            while self.waiting:
                batch, self.waiting = self.waiting, []
                try:
                    await self.queue.ack_all(batch)
                    self.sent += len(batch)
                except Exception as exc:  # an outage: reclaimed after a lease (see above)
                    log.warning("acking %d entries failed: %s; they will be reclaimed",
                                len(batch), exc)
        finally:
            self.task = None

    async def close(self) -> None:
        """Send what waits (a stop): at most :data:`CLOSE_S`."""
        if self.task is None and self.waiting:
            self.task = asyncio.create_task(self._send())
        if self.task is not None:
            await asyncio.wait({self.task}, timeout=CLOSE_S)
