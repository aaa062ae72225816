"""The edge and worker side of the Redis shard replay (loadtest/redis_replay.py): a client
process's users, heartbeat and delivery reader, and a turn as that checkout's worker plays it.

Loaded by path by redis_replay.py, which runs as a script with an old checkout first on
``PYTHONPATH``: like it, this file imports nothing from ``loadtest`` (``sessions`` is the
checkout's), and what the checkout's bus can do is read from it here (``CHUNKS`` ...).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import time
from pathlib import Path
from typing import Any

import orjson

import sessions
from sessions import keys as K
from sessions.bus import Bus

PREFIX = "bench"
SHARDS = 8
LEASE_MS = 30_000
REPLY_WAIT_S = 60.0
"""A user whose reply has not come by then counts the turn lost and goes on (a level with
lost turns is not to be trusted): closed-loop users on a shared machine queue behind each
other, and a turn of 150 log deltas costs the client processes far more than one of chunks."""
HEARTBEAT_S = min(5.0, K.NODE_TTL / 3)
"""As an edge beats (sessions/membership.py): writers deliver only to nodes whose heartbeat key
is alive (NODE_TTL), and drop a dead node from the session for good."""

CHUNKS = hasattr(Bus, "stream_chunk")
"""Whether this checkout streams reply pieces as chunks (else: delta events in the log)."""
BATCHED = hasattr(Bus, "stream_chunks") and hasattr(Bus, "start_attempt")
"""Whether its worker sends every running turn's pieces of a tick in one pipeline and starts
an attempt with one script (START)."""
STATES = (Path(sessions.__file__).parent / "turn_log.py").exists()  # not find_spec: the
# venv's editable install would find main's module for a checkout without one
"""Whether its worker writes the agent's ``state`` events (issue 14: ``thinking`` with the
``turn_start`` in START, ``speaking`` before the first text, ``idle`` with the ending)."""
AGENT = "Agentia demo"
STATE_NAMES = ("thinking", "speaking", "idle")
"""The state events of a plain turn (sessions/turn_log.py)."""
TICK_S = 0.04
"""AGENTIA_COALESCE_MS: the flusher's tick."""
END_FREES = hasattr(Bus, "end_turn")
"""Whether a turn's ending frees the session lock when no turn is pending (one script, not
the worker's next_turn and release_lock after it)."""
TAKES_LOCK = "lease_ms" in inspect.signature(Bus.start_attempt).parameters if BATCHED else False
"""Whether START takes the session lock (issue 13's turn-scripts work: no ACQUIRE before it)."""
MEMORY_WITH_END = TAKES_LOCK and "remember" in inspect.signature(Bus.end_turn).parameters
"""Whether the turn's memory items are written by its ending (no REMEMBER of their own)."""
SPEAKING_LATER = "later" in inspect.signature(Bus.append).parameters
"""Whether the ``speaking`` state reaches the nodes with its text's tick (no fan-out of its own)."""
RIDES_TICK = END_FREES and "tick" in inspect.signature(Bus.end_turn).parameters
"""Whether a turn's ending rides the worker's next tick, with its last text (issue 13,
session 14: sessions/worker.py ``_finish``, the flusher's ``carry``)."""
PARTIAL_EVERY = getattr(K, "PARTIAL_EVERY", 1)
"""Which pieces carry text for the partial buffer (sessions/coalescer.py): every one before
issue 13's turn-redis work, every tenth (the ten's text) since."""


def _state(turn: int, name: str) -> list[dict[str, Any]]:
    return [{"type": "state", "turn": turn, "state": name, "agent": AGENT}] if STATES else []


class Proc:
    """One client process: an edge node (users, heartbeat, delivery reader) and a worker."""

    def __init__(self, bus: Bus, idx: int, deltas: int, reply_chars: int) -> None:
        self.bus, self.idx = bus, idx
        self.node, self.owner = f"edge{idx}", f"worker{idx}"
        self.deltas, self.reply_chars = deltas, reply_chars
        self.waiting: dict[tuple[str, int], asyncio.Future[None]] = {}
        self.latencies: list[float] = []
        self.turns = 0
        self.lost = 0
        self.slots = asyncio.Semaphore(256)
        self.tasks: set[asyncio.Task[None]] = set()
        self.active: set[str] = set()
        self.poked: set[str] = set()
        self.early: set[tuple[str, int]] = set()
        self.flusher = Flusher(bus)

    async def heartbeat(self) -> None:
        """The edge's heartbeat, for as long as the process runs."""
        while True:
            await self.bus.heartbeat_node(self.node)
            await asyncio.sleep(HEARTBEAT_S)

    async def open(self, n: int) -> list[tuple[str, str]]:
        users = [(f"s{self.idx}-{i}", f"u{self.idx}-{i}") for i in range(n)]
        sem = asyncio.Semaphore(128)

        async def one(sid: str, user: str) -> None:
            async with sem:
                await self.bus.open_session(sid, user, self.node)
                await self.bus.touch_user_session(user, sid)

        await asyncio.gather(*(one(s, u) for s, u in users))
        return users

    async def user(self, sid: str, user: str, end: float) -> None:
        n = 0
        while time.monotonic() < end:
            n += 1
            t0 = time.perf_counter()
            fut = asyncio.get_running_loop().create_future()
            sub = await self.bus.submit(sid, f"{sid}-{n}", "what is the weather like today?",
                                        user=user)
            if (sid, sub.offset) in self.early:  # the reply came before submit returned
                self.early.discard((sid, sub.offset))
            else:
                self.waiting[(sid, sub.offset)] = fut
                try:
                    await asyncio.wait_for(fut, REPLY_WAIT_S)
                except TimeoutError:  # counted: a level with lost turns is not trusted
                    self.waiting.pop((sid, sub.offset), None)
                    self.lost += 1
                    continue
            self.latencies.append(time.perf_counter() - t0)
            self.turns += 1

    async def deliver(self) -> None:
        """The edge's delivery loop: XREAD its own stream, resolve waiting users on replies."""
        last = b"0-0"
        while True:
            for d in await self.bus.read_delivery(self.node, last, 100):
                if isinstance(d, tuple):  # a checkout before chunks: (id, sid, offset, event)
                    last, sid, event = d[0], d[1], d[3]
                else:
                    last, sid, event = d.id, d.session, d.event
                    if d.chunk is not None:
                        continue
                ev = orjson.loads(event)
                if ev["type"] == "reply":
                    fut = self.waiting.pop((sid, ev["turn"]), None)
                    if fut is None:
                        self.early.add((sid, ev["turn"]))
                    elif not fut.done():
                        fut.set_result(None)

    async def consume(self) -> None:
        """The worker's loop: XREADGROUP over every shard, one task per entry."""
        while True:
            for claim in await self.bus.claim(list(range(SHARDS)), self.owner, 64, 100):
                await self.slots.acquire()
                task = asyncio.create_task(self.run_entry(claim))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)

    async def run_entry(self, claim: Any) -> None:
        """As the worker does: one task per session in this process (a second entry of a
        session already running only pokes it), all its turns under its lock, then XACK."""
        sid = claim.session
        try:
            if sid in self.active:
                self.poked.add(sid)
            else:
                await self.run_session(sid)
            await claim.ack()
        finally:
            self.slots.release()

    async def run_session(self, sid: str) -> None:
        bus = self.bus
        self.active.add(sid)
        try:
            while True:
                self.poked.discard(sid)
                if not TAKES_LOCK and not await bus.try_lock(sid, self.owner, LEASE_MS):
                    return
                while True:  # with TAKES_LOCK the first turn's START takes the lock
                    turn = await bus.next_turn(sid)
                    if turn is not None:
                        ended = await self.run_turn(sid, turn.offset, turn.text)
                        if ended is None:
                            return  # another worker holds the lock (START)
                        if ended:
                            break  # its ending freed the lock (END_FREES)
                    elif await bus.release_lock(sid, self.owner) != 0:
                        break
                if sid not in self.poked:
                    return
        finally:
            self.active.discard(sid)

    async def run_turn(self, sid: str, turn: int, text: str) -> bool | None:
        """One turn as the worker plays it; True when its ending freed the session lock, None
        when another worker holds it."""
        bus, owner = self.bus, self.owner
        piece = "x" * max(1, self.reply_chars // max(1, self.deltas))
        if BATCHED:  # START (BEGIN and turn_start in one script), then the pieces by tick
            then: dict[str, Any] = {"then": _state(turn, "thinking")} if STATES else {}
            if TAKES_LOCK:
                then["lease_ms"] = LEASE_MS
            started = await bus.start_attempt(sid, turn, owner, max_attempts=3, **then)
            if getattr(started, "busy", False):
                return None
            memory = bus.memory(sid, turn, owner)
            await memory.get_items()
            if STATES:  # as sessions/turn_log.py: before the first text, an append of its own
                later: dict[str, Any] = {"later": True} if SPEAKING_LATER else {}
                await bus.append(sid, _state(turn, "speaking"), owner=owner, **later)
            # all but the last piece, each after its tick; the last waits for the ending
            await self.flusher.stream(sid, turn, started.run, piece, self.deltas - 1)
        else:
            await bus.begin_attempt(sid, turn, owner)
            memory = bus.memory(sid, turn, owner)
            await memory.get_items()
        if CHUNKS and not BATCHED:
            await self.stream_chunks(sid, turn, piece)
        elif not CHUNKS:
            await bus.append(sid, {"type": "turn_start", "turn": turn, "attempt": 1},
                             owner=owner)
            for _ in range(self.deltas):
                await bus.append(sid, {"type": "delta", "turn": turn, "text": piece},
                                 owner=owner)
        reply = piece * max(1, self.deltas)
        await memory.add_items([
            {"role": "user", "content": text},
            {"id": f"msg_{sid}_{turn}", "type": "message", "role": "assistant",
             "status": "completed",
             "content": [{"type": "output_text", "text": reply, "annotations": []}]}])
        ending = {"type": "reply", "turn": turn, "text": reply}
        events = [*_state(turn, "idle"), ending] if STATES else ending
        if BATCHED:  # the last piece: with the ending in its tick, as the worker, or before it
            tick = RIDES_TICK and bus.rides_tick(sid)
            last = self.flusher.queue(sid, turn, started.run, piece, max(1, self.deltas))
            if tick:  # no await between the piece and the ending handed over (``carry``)
                return bool(await bus.end_turn(sid, events, turn, owner, tick=True,
                                               remember=memory.take_unsaved()))
            await last
        if MEMORY_WITH_END:  # the SDK's items wait in memory for the ending's script
            return bool(await bus.end_turn(sid, events, turn, owner,
                                           remember=memory.take_unsaved()))
        if END_FREES:
            return bool(await bus.end_turn(sid, events, turn, owner))
        await bus.append(sid, events, done=turn, owner=owner)
        return False

    async def stream_chunks(self, sid: str, turn: int, piece: str) -> None:
        run = f"{turn}:1:{self.idx}"
        await self.bus.append(sid, {"type": "turn_start", "turn": turn, "attempt": 1},
                              owner=self.owner, run=run)
        for seq in range(1, self.deltas + 1):
            event = orjson.dumps({"type": "chunk", "turn": turn, "attempt": 1, "seq": seq,
                                  "text": piece})
            await self.bus.stream_chunk(sid, run, seq, event, piece)


class Flusher:
    """As the worker's ChunkFlusher (sessions/coalescer.py): the pieces every running turn of
    this process produced during one tick, in one pipeline (``stream_chunks``); a turn's next
    piece comes after its last one was sent, so a turn streams a piece a tick, as a model's
    reply paced by the coalescing window does."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.pending: list[tuple[str, str, int, bytes, str]] = []
        self.waiting: list[asyncio.Future[None]] = []
        self.flushes = self.pieces = 0

    async def stream(self, sid: str, turn: int, run: str, piece: str, n: int) -> None:
        """Pieces 1 … ``n``, each after the tick that sent the one before."""
        for seq in range(1, n + 1):
            await self.queue(sid, turn, run, piece, seq)

    def queue(self, sid: str, turn: int, run: str, piece: str,
              seq: int) -> asyncio.Future[None]:
        """Piece ``seq`` for the next tick; the future is done once that tick was sent."""
        event = orjson.dumps({"type": "chunk", "turn": turn, "attempt": 1, "seq": seq,
                              "text": piece})
        fut = asyncio.get_running_loop().create_future()
        buffered = piece * PARTIAL_EVERY if seq % PARTIAL_EVERY == 0 else ""
        self.pending.append((sid, run, seq, event, buffered))
        self.waiting.append(fut)
        return fut

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            if not self.pending:
                continue
            pieces, waiting = self.pending, self.waiting
            self.pending, self.waiting = [], []
            try:
                await self.bus.stream_chunks(pieces)
            except Exception as exc:  # as the worker's flusher: the tick fails, not the loop
                print(f"stream_chunks failed: {exc!r}", file=sys.stderr, flush=True)
            finally:
                for fut in waiting:
                    fut.set_result(None)
            self.flushes += 1
            self.pieces += len(pieces)
