"""A session's lease while a worker runs it (a mixin of :class:`sessions.worker.Worker`): the
lock renewed and the inbound entries claimed again every third of a lease, the session handed
to another worker at once when this one stops mid-session (docs/architecture.md, "Run")."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from sessions.duties import Running
from sessions.held_entries import HeldEntries
from sessions.roles import Claimed, WorkerBus
from sessions.worker_config import WorkerConfig

log = logging.getLogger("agentia.worker")


class LeaseKeeping:
    """The worker's lease keeping of the sessions it runs."""

    bus: WorkerBus
    name: str
    cfg: WorkerConfig
    running: dict[str, Running]
    held: HeldEntries

    async def _hand_off(self, claim: Claimed) -> None:
        """Shutting down mid-session: give the session to another worker now, not after a
        lease: free the lock, then write a new entry, then ack the old one (a crash between
        steps leaves the old entry pending, to be reclaimed)."""
        with suppress(Exception):
            async with asyncio.timeout(2):
                await self.bus.release_lock(claim.session, self.name, force=True)
                await claim.nack()

    async def _keep_lease(self, claim: Claimed) -> None:
        sid = claim.session
        while True:
            await asyncio.sleep(self.cfg.lease_ms / 3000)
            try:
                if not await self.bus.renew_lock(sid, self.name, self.cfg.lease_ms):
                    log.warning("lost the lock of session %s; stopping its turn", sid)
                    run = self.running.get(sid)
                    if run and run.task:
                        run.lost = True
                        run.task.cancel()
                    return
                # with the entries held for the session (sessions/held_entries.py)
                await asyncio.gather(claim.keep(), *(c.keep() for c in self.held.of(sid)))
            except Exception as exc:  # an outage (or redis-py's race): try again next time
                log.warning("renewing the lease of session %s failed: %s", sid, exc)
