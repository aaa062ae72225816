"""Agent worker: consumes turns from the inbound shards of the agents it runs and runs each
session's turns with that session's agent (the shard's), with the Agents SDK.

Rules (see docs/architecture.md):

* A shard entry only says "session S has a turn". The worker that holds the session's lock
  runs all its pending turns, oldest first, one at a time; a worker that finds the lock taken
  acks the entry, because the holder's release is atomic with "no turn pending".
* The entry is acked only after the session's turns are finished and the lock released. A
  worker that dies leaves its entry pending; another worker reclaims it (XAUTOCLAIM) once the
  lease has run out. A live worker keeps its entry fresh (XCLAIM to itself) and its lock leased.
* Every attempt of a turn is counted in Redis; past ``max_attempts`` the turn is dead-lettered
  and the client gets a ``turn_error`` event.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace
from typing import Any

from agents import Agent, ModelProvider

from agentia import metrics as M
from agentia import tracing
from agentia.codes import BusUnavailable, ErrorCode
from agentia.logs import Throttle, bind
from sessions import events as E
from sessions import keys as K
from sessions import turn_spans as TS
from sessions.bus import LockLost, Turn, is_down
from sessions.coalescer import ChunkFlusher, Coalescer
from sessions.duties import Running as _Running
from sessions.duties import beat, cancel_loop, still_cancelled
from sessions.entry_acks import EntryAcks
from sessions.held_entries import HeldEntries
from sessions.lease_keeping import LeaseKeeping
from sessions.memory import Memory, RedisMemory
from sessions.roles import Claimed, Ended, Inbound, WorkerBus
from sessions.shard_reads import ShardReads
from sessions.turn_end import TurnEnding
from sessions.turn_log import TurnEnded, TurnLog, ending, started
from sessions.turn_produce import TurnProducing
from sessions.worker_config import WorkerConfig as WorkerConfig

log = logging.getLogger("agentia.worker")
OUTAGE_RETRIES = 4
OUTAGE_BACKOFF_S = 0.5
"""A session that meets a Redis outage is retried after 0.5, 1, 2, 4 s (a Cluster failover
takes a few seconds), then left pending for another worker to reclaim after the lease."""
_OUTAGES = Throttle(10.0)


def _outage(msg: str, sid: str) -> None:
    """A session's outage line, at most one per message every 10 s: an outage (or a start
    storm that empties the Redis pool) reaches every running session at once, and 1,000
    sessions logged a line each (session 10's bench_worker)."""
    held = _OUTAGES.allow(msg)
    if held is not None:
        log.warning(msg + (f" ({held} similar lines suppressed)" if held else ""), sid)


_UNTRACED = nullcontext()
"""What a turn runs in when tracing is off (agentia/tracing.py): no tracer call at all."""


class _Busy(Exception):
    """The session's lock is another worker's (found by the attempt's START, which takes it)."""


class _Stale(Exception):
    """The turn its shard entry named is not the session's first pending one (START)."""


Agents = dict[str, tuple[Agent[Any], frozenset[str]]]
"""Agent name -> (the agent, its private tools' names), in registry order."""


class Worker(ShardReads, TurnEnding, TurnProducing, LeaseKeeping):
    def __init__(self, bus: WorkerBus, agents: Agents | Agent[Any], provider: ModelProvider,
                 config: WorkerConfig | None = None, name: str | None = None,
                 published: list[dict[str, Any]] | None = None,
                 unnamed: bool = False,
                 memories: Callable[[str, int, str], Memory] | None = None) -> None:
        """``agents``: the agents this worker runs (a lone Agent is the ``default`` one);
        ``published``: what it registers of them (sessions/registry.py ``describe``);
        ``unnamed``: its first agent is the deployment's default, so it also runs the turns
        of the ``default`` shards (pre-registry turns, sessions without an agent);
        ``memories``: the agent's memory of (session, turn, owner), default the bus's Redis
        memory (sessions/memory_dapr.py for ``AGENTIA_MEMORY=dapr``)."""
        self.bus = bus
        self.memories = memories or bus.memory
        self.preload = memories is None
        """The agent's memory is the bus's: START reads it for the turn (:class:`RedisMemory`
        ``preload``)."""
        self.agents: Agents = (agents if isinstance(agents, dict)
                               else {K.DEFAULT_AGENT: (agents, frozenset())})
        self.agent = next(iter(self.agents.values()))[0]
        """The first agent (what a session without an agent runs, see :meth:`agent_for`)."""
        self.published = published or [
            {"name": n, "description": "", "tools": [], "order": i}
            for i, n in enumerate(self.agents)]
        self.streams = tuple(self.agents) + (
            (K.DEFAULT_AGENT,) if unnamed and K.DEFAULT_AGENT not in self.agents else ())
        """Whose shards this worker reads: its agents' (and maybe ``default``'s)."""
        self.inbound: list[Inbound] = [(a, k) for a in self.streams for k in range(bus.shards)]
        """Every shard this worker reads."""
        self.provider = provider
        self.cfg = config or WorkerConfig()
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self.tasks: set[asyncio.Task[Any]] = set()
        self.running: dict[str, _Running] = {}
        self.active: set[str] = set()
        self.poked: dict[str, int] = {}
        """An entry came since the loop's ending or RELEASE went: the lowest offset such
        entries named (0: one named none), the turn the loop STARTs when it looks again."""
        self.acks = EntryAcks(bus)  # entries acked apart, together (sessions/entry_acks.py)
        self.held = HeldEntries(self.acks)  # until their turns end (sessions/held_entries.py)
        self.outages: set[str] = set()
        """Sessions whose last attempt met a Redis outage (its next attempt is not counted)."""
        self.slots = asyncio.Semaphore(self.cfg.concurrency)
        self.chunks = ChunkFlusher(bus, self.cfg.coalesce_ms / 1000)
        """Every running turn's reply pieces, one pipeline per ``coalesce_ms``."""
        self.kept = {}
        self.renewing = set()
        self.keeper = None
        """The lease keeper of every session this worker runs (sessions/lease_keeping.py)."""
        self.stopping = asyncio.Event()
        self.turns_done = 0
        self._last_reclaim = 0.0

    # ------------------------------------------------------------ main loops

    async def run(self, burst: bool = False) -> None:
        """Consume until stopped; with ``burst``, return once no turn is left to run."""
        await self.bus.ensure_groups(self.streams)
        await self.bus.publish_agents(self.published)
        preload = getattr(self.bus, "preload_scripts", None)
        if preload is not None:  # once here, not again on every concurrent first call
            await preload()
        loops = [asyncio.create_task(cancel_loop(self.bus, self.running)),
                 asyncio.create_task(beat(self.bus, self.name, self.published, self.streams))]
        try:
            if self.bus.cluster:
                await self._run_per_shard(burst)
            else:
                await self._run_all_shards(burst)
        finally:
            await self._drain()
            await self._stop_keeping()
            await self.acks.close()  # the entries acked by the reads and the drained sessions
            for t in loops:
                t.cancel()

    def _spawn(self, claim: Claimed) -> None:
        task = asyncio.create_task(self._handle(claim))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _drain(self) -> None:
        """Let running sessions finish for ``grace_s``; hand the rest to other workers."""
        if self.tasks:
            await asyncio.wait(set(self.tasks), timeout=self.cfg.grace_s)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # ------------------------------------------------------------ one session

    async def _handle(self, claim: Claimed) -> None:
        sid = claim.session
        bind(session=sid, entry=claim.id.decode())
        async with self.slots:
            for retry in itertools.count():
                try:
                    await self._handle_once(claim)
                    self.outages.discard(sid)
                    return
                except Exception:  # only outages get here (_handle_once handles the rest)
                    M.REDIS_ERRORS.labels("worker").inc()
                    self.outages.add(sid)
                    if retry >= OUTAGE_RETRIES or self.stopping.is_set():
                        _outage("Redis unavailable while running session %s; will be "
                                "reclaimed", sid)
                        return
                    # a failover or a restart: retry here soon rather than after a lease
                    _outage("Redis unavailable while running session %s; retrying", sid)
                    await asyncio.sleep(OUTAGE_BACKOFF_S * 2 ** retry)

    async def _handle_once(self, claim: Claimed) -> None:
        sid = claim.session
        try:
            # a session this worker runs already will see the turn (poked, in case it is
            # just releasing); a reclaimed entry whose lock is taken may belong to the dead
            # worker: retry it after another lease
            if sid in self.active:  # held until its turn ended (sessions/held_entries.py)
                self._hold(claim)
                return
            ended = await self._try_session(claim)
            if ended is None and claim.reclaimed:
                return
            if ended is None or not ended.acked:  # else acked with the turn's ending
                self.acks.add(claim)  # with the others (sessions/entry_acks.py)
        except LockLost:
            # Not "another worker runs it" for sure: a failover can lose the lock itself, and
            # this entry may have been acked already (reclaimed while this run was retrying:
            # the poke path). A fresh entry makes sure the turn is looked at again: by the
            # lock's holder if there is one (START answers busy to anyone else), else by
            # whoever takes it (tests/rediscluster/test_failover.py lost a turn without it).
            log.warning("lost the lock of session %s; its turns go back to the queue", sid)
            await claim.nack()
        except asyncio.CancelledError:
            await self._hand_off(claim)
            raise
        except Exception as exc:
            if isinstance(exc, BusUnavailable) or is_down(exc):
                raise
            log.exception("session %s failed; its entry stays pending", sid)

    async def _try_session(self, claim: Claimed) -> Ended | None:
        """Run the session's turns if its lock can be had; None if another worker holds it,
        else whether the claim was acked with the last turn's ending. The lock is taken by the
        first turn's START script (no ACQUIRE of its own: one round trip fewer per turn); the
        keeper's first renewal comes a third of a lease later."""
        sid = claim.session
        self.active.add(sid)  # before any await: one task per session in this worker
        acked = False
        offset = claim.offset
        try:
            while True:
                self.poked.pop(sid, None)
                kept = self._keep(claim)  # the lease renewed while the session runs
                try:
                    ended = await self._run_session(claim, offset)
                    if ended is None:
                        return None
                    acked = acked or ended.acked
                finally:
                    self._unkeep(kept)
                # An entry read while the release was on its way to Redis was acked on the
                # strength of this worker being active: look again before going inactive
                # (nothing awaits between this check and the discard below).
                if sid not in self.poked:
                    return Ended(True, acked)
                # START the turn the late entry names, not this claim's, which ended: that
                # was a stale START and a read of the pending turns, two round trips per
                # poke (~0.12 a 300-word turn at 40 sessions, session 17)
                offset = self.poked[sid]
        finally:
            self.active.discard(sid)
            self.held.release(sid)

    async def _run_session(self, claim: Claimed, offset: int) -> Ended | None:
        """Run the session's pending turns; None when another worker holds its lock. The
        pending turns are read before the lock is held (START takes it). None pending: the
        lock is released if it is this worker's (one it left behind when Redis failed before
        a release: a turn submitted since would otherwise wait for its lease), and another
        worker's is left alone (RELEASE answers -1). The turn after one that ended comes
        with its ending (no read of its own), the first from the claim's entry (START checks
        it): ``offset``, the claim's or, when the loop looks again, a late entry's."""
        sid = claim.session
        # the entry's turn (none: a ``nack``'s; with tracing on its span needs the turn first)
        turn = Turn.named(sid, offset) if offset and not tracing.ON else None
        while True:
            turn = turn or await self.bus.next_turn(sid)
            if turn is None:
                self.poked.pop(sid, None)  # an entry read from here on: the loop looks again
                if await self.bus.release_lock(sid, self.name) != 0:
                    return Ended(True)
                continue
            try:
                ended = await self._run_turn(replace(turn, agent=claim.agent), claim)
                if ended.released:  # no turn was pending (_finish); maybe acked with it
                    return ended
            except _Busy:
                return None
            except _Stale:  # the entry's turn ended, or another is ahead: read them
                turn = None
                continue
            turn = ended.next  # read by the ending, which kept the lock for it

    async def _run_turn(self, turn: Turn, claim: Claimed) -> Ended:
        """Run one turn; its ending (none: the attempt failed, the turn is still pending)."""
        bind(turn=turn.offset)
        run = self.running[turn.session] = _Running(turn.offset)
        try:
            with TS.turn_span(turn, claim, self.name) if tracing.ON else _UNTRACED:
                await self._attempt(turn, run, claim)
        finally:
            self.running.pop(turn.session, None)
        if run.ended is not None:
            self.held.turn_ended(turn.session, turn.offset)
        return run.ended if run.ended is not None else Ended(False)

    async def _attempt(self, turn: Turn, run: _Running, claim: Claimed) -> None:
        again = turn.session in self.outages
        self.outages.discard(turn.session)
        runs, private = self.agent_for(turn)
        agent = runs.name
        began = tracing.now() if tracing.ON else 0
        started_ = await self.bus.start_attempt(turn.session, turn.offset, self.name,
                                                 max_attempts=self.cfg.max_attempts, again=again,
                                                 then=started(turn, agent), said=turn.text,
                                                 lease_ms=self.cfg.lease_ms,
                                                 read_memory=self.preload, first=turn.unread)
        if started_.busy:
            raise _Busy(turn.session)
        if started_.stale:
            raise _Stale(turn.session)
        if started_.turn is not None:  # read by START (``first``)
            turn = replace(started_.turn, agent=turn.agent)
        if tracing.ON:
            TS.claimed(began, started_)
        attempt, cancelled = started_.attempt, started_.cancelled
        if started_.held:  # an operator took the session over: the turn ends without a run
            await self._finish(turn, E.cancelled(turn.offset, "", agent, reason=E.TAKEOVER),
                               claim=claim)
            M.TURNS.labels("cancelled").inc()  # it ends `cancelled` (reason takeover)
            return
        if cancelled or run.cancelled_by_user:
            await self._finish(turn, ending(turn, E.cancelled(turn.offset, "", agent), agent),
                               claim=claim)
            M.TURNS.labels("cancelled").inc()
            return
        if not started_.run:  # past max_attempts (counted since its last pause, START)
            await self._dead_letter(claim, turn, attempt - 1, "the turn failed on every attempt")
            return
        # the turn_start and its state thinking are in the log already (START)
        co = Coalescer(self.chunks, turn.session, turn.offset, attempt, started_.run)
        run.log = tl = TurnLog(self.bus, turn, self.name, co, agent, private)
        memory = self.memories(turn.session, turn.offset, self.name)
        run.attempt = attempt
        # only an attempt after another can find the turn paused (sessions/approvals.py)
        record = (await self.bus.resume_pause(turn.session, turn.offset, self.name)
                  if attempt > 1 or again else None)
        if started_.memory is not None and record is None and isinstance(memory, RedisMemory):
            memory.preload(started_.memory)  # the agent's first read, made by START
        try:
            await run.run_here(self._produce(turn, co, run, memory, record))
        except TurnEnded as end:
            await self.bus.rollback_memory(turn.session, turn.offset)
            await self._finish(turn, tl.ending(end.event), claim=claim, co=co)
            M.TURNS.labels("ended").inc()
        except asyncio.CancelledError:
            if not run.interrupted or still_cancelled():  # not (only) the turn's: stopping
                raise
            if run.lost:
                raise LockLost(turn.session) from None
            if not run.cancelled_by_user:
                raise
            if run.paused:  # no tool call left without its output in the agent's memory
                memory.take_unsaved()
                await self.bus.rollback_memory(turn.session, turn.offset)
            await self._finish(turn, tl.ending(E.cancelled(turn.offset, "".join(co.text),
                                                           tl.agent)), memory.take_unsaved(),
                               claim, co)
            M.TURNS.labels("cancelled").inc()
        except TimeoutError:
            await self._dead_letter(claim, turn, attempt, "the turn took too long",
                                    ErrorCode.TURN_TIMEOUT, tl.agent, co)
        except (BusUnavailable, LockLost):
            raise
        except Exception as exc:
            if memory.outage:  # Redis failed under the SDK, not the turn
                raise BusUnavailable() from exc
            log.warning("turn %s/%s attempt %d failed: %r", turn.session, turn.offset, attempt, exc)
            M.TURNS.labels("attempt_failed").inc()
            await asyncio.sleep(self.cfg.retry_backoff_s * attempt)
        else:
            await self._finish(turn, tl.ending(E.reply(turn.offset, "".join(co.text),
                                                       tl.agent)), memory.take_unsaved(), claim,
                               co)
            self.turns_done += 1
            M.TURNS.labels("completed").inc()
            if turn.ts:
                M.TURN_TIME.observe(max(0.0, time.time() - turn.ts))
                if co.first_at:
                    M.FIRST_DELTA.observe(max(0.0, co.first_at - turn.ts))

    def agent_for(self, turn: Turn) -> tuple[Agent[Any], frozenset[str]]:
        """The agent that runs ``turn`` (its session's; the first one for a turn of the
        ``default`` shards this worker reads as the deployment's default) and its private
        tools."""
        return self.agents.get(turn.agent) or next(iter(self.agents.values()))

    # ------------------------------------------------------------ side loops
