"""How a worker reads the inbound shards of its agents (sessions/worker.py): one XREADGROUP
over every shard on a single Redis, one reader per shard on a Cluster, each taking its share of
the free capacity; reclaiming the entries of stalled workers beside them."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress
from typing import Any

from agentia import metrics as M
from agentia.codes import BusUnavailable
from sessions.claims_ahead import ClaimsAhead
from sessions.entry_acks import EntryAcks
from sessions.held_entries import HeldEntries
from sessions.roles import Claimed, Inbound, WorkerBus
from sessions.worker_config import WorkerConfig

log = logging.getLogger("agentia.worker")


class ShardReads:
    """The worker's reading loops (a mixin of :class:`sessions.worker.Worker`)."""

    bus: WorkerBus
    cfg: WorkerConfig
    name: str
    streams: tuple[str, ...]
    inbound: list[Inbound]
    tasks: set[asyncio.Task[Any]]
    slots: asyncio.Semaphore
    stopping: asyncio.Event
    active: set[str]
    poked: dict[str, int]
    acks: EntryAcks
    held: HeldEntries
    _last_reclaim: float

    def _spawn(self, claim: Claimed) -> None:
        raise NotImplementedError

    def _take(self, claims: list[Claimed]) -> None:
        """Start a task for each claimed entry, but for those of a session this worker runs
        already: its loop will see the turn (marked poked in case the loop is releasing:
        sessions/worker.py ``_try_session``), and the entry is held pending until its turn
        ended (sessions/held_entries.py: the shard's lag counts it), then acked with the
        others that come meanwhile (sessions/entry_acks.py), with no task, slot or round
        trip of its own. Nothing awaits between the look at ``active`` and the poke."""
        for claim in claims:
            if claim.session in self.active:
                self._hold(claim)
            else:
                self._spawn(claim)

    def _hold(self, claim: Claimed) -> None:
        """An entry of a session this worker runs: the session's loop is poked (it STARTs the
        lowest offset poked when it looks again) and the entry held until its turn ended."""
        sid, offset = claim.session, claim.offset
        self.poked[sid] = min(offset, self.poked.get(sid, offset))
        self.held.hold(claim)

    async def _run_all_shards(self, burst: bool) -> None:
        # reads asked for ahead on the bus's own reader (sessions/claims_ahead.py), if it has
        make = getattr(self.bus, "claims_ahead", None)
        ahead = make(self.inbound, self.name, self.cfg.block_ms) if make else None
        waker = asyncio.create_task(self._wake_on_stop(ahead)) if ahead is not None else None
        try:
            while not self.stopping.is_set():
                got = await self._poll(ahead)
                if burst and not got and not self.tasks:
                    got = await self._reclaim()
                    if not got and not self.tasks:
                        return
        finally:
            if waker is not None:
                waker.cancel()
            if ahead is not None:  # answers already arrived: run (or handed off) by _drain
                for claim in await ahead.close():
                    self._spawn(claim)

    async def _wake_on_stop(self, ahead: ClaimsAhead) -> None:
        """A stop ends the blocked read at once, not after its ``block_ms``."""
        await self.stopping.wait()
        await ahead.wake()

    async def _poll(self, ahead: ClaimsAhead | None = None) -> int:
        """One XREADGROUP over every shard (a single Redis serves them all). COUNT applies
        to each stream, so each takes a share of the free capacity: a worker must not hold
        (in its pending list) turns it cannot start while other workers idle. With ``ahead``
        the next of the reads in flight, which together ask for no more than that room."""
        await self._room()
        if ahead is not None:
            n = await self._read_ahead(ahead)
        else:
            n = await self._read(self.inbound, -(-self._free() // len(self.inbound)))
        if time.monotonic() - self._last_reclaim > self.cfg.lease_ms / 4000:
            # the reads in flight may still claim what they ask for: a reclaim takes only the
            # room they leave (none: the next poll tries again), so the worker never holds
            # more turns than ``concurrency``
            room = self.cfg.concurrency - len(self.tasks) - (
                sum(ahead.asked) if ahead is not None else 0)
            if room > 0:
                n += await self._reclaim(room)
        return n

    async def _run_per_shard(self, burst: bool) -> None:
        """On a Cluster every shard has its own slot, and XREADGROUP may not span slots: one
        reader per shard, each blocking on its own stream (so a quiet shard never delays a
        busy one), each taking its share of the free capacity (so together they do not read
        far beyond ``concurrency``). Reclaiming runs beside them."""
        idle = [False] * len(self.inbound)
        readers = [asyncio.create_task(self._read_shard(i, idle))
                   for i in range(len(self.inbound))]
        try:
            while not self.stopping.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), self._pause(burst))
                got = 0
                if burst or time.monotonic() - self._last_reclaim > self.cfg.lease_ms / 4000:
                    got = await self._reclaim()
                if burst and all(idle) and not got and not self.tasks:
                    return
        finally:
            self.stopping.set()  # readers leave after their current read (block_ms at most)
            await asyncio.gather(*readers, return_exceptions=True)

    def _pause(self, burst: bool) -> float:
        return self.cfg.block_ms / 1000 if burst else self.cfg.lease_ms / 4000

    async def _read_shard(self, i: int, idle: list[bool]) -> None:
        while not self.stopping.is_set():
            await self._room()
            share = -(-self._free() // len(self.inbound))  # ceil: at least one each
            idle[i] = await self._read([self.inbound[i]], share) == 0

    async def _room(self) -> None:
        """Wait until a session slot is free (not held: the session task takes it)."""
        await self.slots.acquire()
        self.slots.release()

    async def _read(self, shards: list[Inbound], count: int) -> int:
        try:
            claims = await self.bus.claim(shards, self.name, count, self.cfg.block_ms)
        except Exception as exc:
            return await self._on_read_error(exc)
        self._take(claims)
        return len(claims)

    async def _read_ahead(self, ahead: ClaimsAhead) -> int:
        try:
            claims = await ahead.claim(self.cfg.concurrency - len(self.tasks))
        except Exception as exc:
            return await self._on_read_error(exc)
        self._take(claims)
        return len(claims)

    async def _on_read_error(self, exc: Exception) -> int:
        if "NOGROUP" in str(exc):
            log.warning("consumer group missing (Redis restarted?); recreating")
            with suppress(BusUnavailable):
                await self.bus.ensure_groups(self.streams)
        else:
            log.warning("reading turns failed: %s; retrying", exc)
            M.REDIS_ERRORS.labels("worker").inc()
            await asyncio.sleep(0.5)
        return 0

    async def _reclaim(self, room: int | None = None) -> int:
        """Take over entries whose worker stopped renewing them for a whole lease: at most
        ``room`` over all shards (default: the free capacity, at least one)."""
        self._last_reclaim = time.monotonic()
        n, left = 0, room if room is not None else self._free()
        if left >= len(self.inbound):
            # one round trip for every shard (was one each, in turn: 8 every lease/4 while
            # turns flow, ~0.5 of a 300-word turn's Redis reads at 40 sessions, session 17);
            # an equal share of the room each, so that together they take no more than it
            try:
                claims = await self.bus.reclaim_all(self.inbound, self.name,
                                                    self.cfg.lease_ms, left // len(self.inbound))
            except Exception as exc:
                log.debug("reclaim failed: %s", exc)
                return 0
            return self._took(claims)
        for shard in self.inbound:
            if n >= left:
                break
            try:
                claims = await self.bus.reclaim(shard, self.name, self.cfg.lease_ms, left - n)
            except Exception as exc:
                log.debug("reclaim on shard %s failed: %s", shard, exc)
                continue
            n += self._took(claims)
        return n

    def _took(self, claims: list[Claimed]) -> int:
        for claim in claims:
            # entry ids are per shard: two shards can hold the same one
            log.info("reclaimed %s of %s (session %s) from a stalled worker",
                     claim.id, claim.ack_command()[1], claim.session)
            self._spawn(claim)
        return len(claims)

    def _free(self) -> int:
        return max(1, self.cfg.concurrency - len(self.tasks))

