"""A session's lease while a worker runs it (a mixin of :class:`sessions.worker.Worker`): the
lock renewed and the inbound entries claimed again every third of a lease, the session handed
to another worker at once when this one stops mid-session (docs/architecture.md, "Run").

One keeper task per worker renews the leases of every session it runs, each a third of a lease
after its run started or its last renewal (issue 13, session 19): a task per session run was
started, put to sleep on a timer of its own and cancelled for every short turn, which ends long
before its first renewal."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from sessions.duties import Running
from sessions.held_entries import HeldEntries
from sessions.roles import Claimed, WorkerBus
from sessions.worker_config import WorkerConfig

log = logging.getLogger("agentia.worker")


@dataclass(slots=True, eq=False)
class Kept:
    """A session run whose lease the worker keeps: its claim, when its next renewal is due."""

    claim: Claimed
    due: float


class LeaseKeeping:
    """The worker's lease keeping of the sessions it runs."""

    bus: WorkerBus
    name: str
    cfg: WorkerConfig
    running: dict[str, Running]
    held: HeldEntries
    kept: dict[str, Kept]
    """The sessions whose lease is kept, the next due first (a renewal moves one to the end)."""
    renewing: set[asyncio.Task[Any]]
    keeper: asyncio.Task[None] | None

    def _keep(self, claim: Claimed) -> Kept:
        """Keep the lease of ``claim``'s session from now on (until :meth:`_unkeep`): its
        first renewal a third of a lease from now, as the START that took the lock."""
        loop = asyncio.get_running_loop()
        self.kept.pop(claim.session, None)  # (none: one run per session) last in due order
        kept = self.kept[claim.session] = Kept(claim, loop.time() + self.cfg.lease_ms / 3000)
        if self.keeper is None:
            self.keeper = asyncio.create_task(self._keep_leases())
        return kept

    def _unkeep(self, kept: Kept) -> None:
        """The run of ``kept`` ended: no more renewals for it (one in flight is ignored)."""
        if self.kept.get(kept.claim.session) is kept:
            del self.kept[kept.claim.session]

    async def _keep_leases(self) -> None:
        """Renew each kept session's lease when it is due (the first in :attr:`kept`), until
        none is kept. Each renewal runs in a task of its own, so a slow one delays no other."""
        loop = asyncio.get_running_loop()
        third = self.cfg.lease_ms / 3000
        try:
            while self.kept:
                sid, kept = next(iter(self.kept.items()))
                wait = kept.due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                    continue
                del self.kept[sid]  # due again a third of a lease from now, last in order
                kept.due = loop.time() + third
                self.kept[sid] = kept
                task = asyncio.create_task(self._renew(kept))
                self.renewing.add(task)
                task.add_done_callback(self.renewing.discard)
        finally:
            self.keeper = None

    async def _renew(self, kept: Kept) -> None:
        """Renew one session's lock and claim its entries again; a lock found lost stops its
        running turn (and its renewals)."""
        claim = kept.claim
        sid = claim.session
        try:
            renewed = await self.bus.renew_lock(sid, self.name, self.cfg.lease_ms)
            if self.kept.get(sid) is not kept:
                return  # the run ended while the renewal was on its way: nothing to stop
            if not renewed:
                log.warning("lost the lock of session %s; stopping its turn", sid)
                self._unkeep(kept)
                run = self.running.get(sid)
                if run and (run.task is not None or run.interrupted):
                    run.lost = True
                    run.interrupt()
                return
            # with the entries held for the session (sessions/held_entries.py)
            await asyncio.gather(claim.keep(), *(c.keep() for c in self.held.of(sid)))
        except Exception as exc:  # an outage (or redis-py's race): try again next time
            log.warning("renewing the lease of session %s failed: %s", sid, exc)

    async def _stop_keeping(self) -> None:
        """The worker stops: no more renewals (the sessions were handed off or finished)."""
        tasks = [t for t in (self.keeper, *self.renewing) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _hand_off(self, claim: Claimed) -> None:
        """Shutting down mid-session: give the session to another worker now, not after a
        lease: free the lock, then write a new entry, then ack the old one (a crash between
        steps leaves the old entry pending, to be reclaimed)."""
        with suppress(Exception):
            async with asyncio.timeout(2):
                await self.bus.release_lock(claim.session, self.name, force=True)
                await claim.nack()
