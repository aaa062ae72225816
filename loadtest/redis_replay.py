"""One run of the Redis shard benchmark (loadtest/bench_redis.py) against one checkout: the bus
calls of a turn replayed by hand with that checkout's :class:`sessions.bus.Bus`.

Run as a script with the checkout first on ``PYTHONPATH`` (bench_redis does), so that
``sessions`` and ``launch`` are the checkout's while this file is the benchmark's own: it
imports nothing from ``loadtest``. It prints one JSON document (idle phase, levels).

A checkout whose bus has ``stream_chunk`` sends reply pieces as chunks (partial buffer and
delivery streams, not the log: docs/architecture.md "Reply text: chunks off the log"); an
older one appends each piece to the log as a ``delta`` event (one ``APPEND`` script and its
fan-out). Both are played as their worker plays them: since session 14 (``RIDES_TICK``) a
turn's ending rides the tick of its last piece, as the worker's does (sessions/worker.py
``_finish``), where an older checkout's goes in a round trip of its own after that tick.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis as sync_redis

import sessions
from launch.redis_server import RedisServer
from sessions import keys as K
from sessions.bus import Bus, connect

PREFIX = "bench"
SHARDS = 8
LEASE_MS = 30_000
REPLY_WAIT_S = 60.0
"""A user whose reply has not come by then counts the turn lost and goes on (a level with
lost turns is not to be trusted): closed-loop users on a shared machine queue behind each
other, and a turn of 150 log deltas costs the client processes far more than one of chunks."""
STEADY_TURNS = 20
"""Turns a session's log and memory hold in the capacity model (--turns-per-session): bytes per
turn are measured at that many (a stream's first listpack node takes 4 KiB: a log of one or
two turns, all a 150-piece level runs per session, costs more per turn than one of twenty)."""
HEARTBEAT_S = min(5.0, K.NODE_TTL / 3)
"""As an edge beats (sessions/membership.py): writers deliver only to nodes whose heartbeat key
is alive (NODE_TTL), and drop a dead node from the session for good."""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


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


# ------------------------------------------------------------------ one client process


class _Proc:
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
        self.flusher = _Flusher(bus)

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


class _Flusher:
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


def _client(url: str, idx: int, users: int, seconds: float, deltas: int, reply_chars: int,
            go: Any, q: Any) -> None:
    async def main() -> None:
        # as a worker loads the Agents SDK at start: a turn's first bus.memory() imports it,
        # blocking the loop (~4 s here) inside the measured time
        importlib.import_module("sessions.memory")
        # a connection for every user, worker slot and loop: callers queueing on the pool is
        # not what is measured (and with 128, 22 of 200 users hung in their first submit)
        bus = Bus(connect(url, max_connections=users + 512), prefix=PREFIX, shards=SHARDS)
        p = _Proc(bus, idx, deltas, reply_chars)
        beat = asyncio.create_task(p.heartbeat())
        sessions = await p.open(users)
        q.put(("opened", idx))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        side = [beat, asyncio.create_task(p.deliver()), asyncio.create_task(p.consume()),
                asyncio.create_task(p.flusher.run())]
        end, cpu0 = time.monotonic() + seconds, time.process_time()
        await asyncio.gather(*(p.user(s, u, end) for s, u in sessions))
        q.put(("done", p.turns, p.latencies, time.process_time() - cpu0, p.lost,
               (p.flusher.flushes, p.flusher.pieces)))
        # the worker side serves the other processes' users too: stop taking turns, let the
        # running ones finish with the flusher still ticking, then stop the rest
        side[2].cancel()
        if p.tasks:
            await asyncio.wait(set(p.tasks), timeout=REPLY_WAIT_S)
        for t in side:
            t.cancel()
        await asyncio.gather(*side, *p.tasks, return_exceptions=True)
        await bus.close()

    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(main())


# ------------------------------------------------------------------ the parent


class _Shard:
    def __init__(self, server: RedisServer) -> None:
        self.server = server
        assert server.proc is not None
        self.pid = server.proc.pid
        self.r = sync_redis.Redis.from_url(server.url)

    def cpu(self) -> float:
        return cpu_s(self.pid)

    def commands(self) -> int:
        return int(self.r.info("stats")["total_commands_processed"])

    def used_memory(self) -> int:
        return int(self.r.info("memory")["used_memory"])

    def key_bytes(self, keys: list[str]) -> int:
        return sum(int(self.r.memory_usage(k, samples=0) or 0) for k in keys)


def _run_clients(shard: _Shard, procs: int, users: int, seconds: float, deltas: int,
                 reply_chars: int) -> dict[str, Any]:
    """Start the client processes, let them open their sessions, then measure the turns."""
    ctx = mp.get_context("spawn")
    q, go = ctx.Queue(), ctx.Event()
    ps = [ctx.Process(target=_client, args=(shard.server.url, i, users, seconds, deltas,
                                            reply_chars, go, q)) for i in range(procs)]
    try:
        for p in ps:
            p.start()
        for _ in ps:
            _get(q, ps, 120)
        mem0, cpu0, cmd0, t0 = shard.used_memory(), shard.cpu(), shard.commands(), time.time()
        go.set()
        done = [_get(q, ps, seconds + REPLY_WAIT_S + 120) for _ in ps]
        wall, cpu1, cmd1 = time.time() - t0, shard.cpu(), shard.commands()
        for p in ps:
            p.join(30)
    finally:
        for p in ps:
            if p.is_alive():
                p.kill()
    turns = sum(d[1] for d in done)
    lat = [x for d in done for x in d[2]]
    return {"turns": turns, "wall_s": round(wall, 2), "cpu": cpu1 - cpu0, "commands": cmd1 - cmd0,
            "mem0": mem0, "lat": lat, "client_cpu": sum(d[3] for d in done),
            "lost": sum(d[4] for d in done),
            "flushes": [sum(d[5][i] for d in done) for i in (0, 1)]}


def _get(q: Any, ps: list[Any], timeout: float) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            return q.get(timeout=1)
        if any(p.exitcode not in (None, 0) for p in ps):
            raise RuntimeError("a client process failed; see its traceback")
    raise TimeoutError("client processes did not report in time")


def bench_idle(shard: _Shard, sessions: int) -> dict[str, Any]:
    """Sessions opened as an edge does on connect: OPEN script and the user's session list."""
    shard.r.flushall()
    mem0, cpu0, cmd0 = shard.used_memory(), shard.cpu(), shard.commands()

    async def main() -> None:
        bus = Bus(connect(shard.server.url, max_connections=128), prefix=PREFIX, shards=SHARDS)
        await _Proc(bus, 0, 0, 0).open(sessions)
        await bus.close()

    t0 = time.time()
    asyncio.run(main())
    wall = time.time() - t0
    cpu, cmd, mem = shard.cpu() - cpu0, shard.commands() - cmd0, shard.used_memory() - mem0
    return {"sessions": sessions, "wall_s": round(wall, 2),
            "redis_cpu_s_per_1000_opens": round(cpu / sessions * 1000, 4),
            "redis_commands_per_open": round(cmd / sessions, 2),
            "redis_bytes_per_idle_session": round(mem / sessions)}


def bench_level(shard: _Shard, procs: int, users: int, seconds: float, deltas: int,
                reply_chars: int) -> dict[str, Any]:
    shard.r.flushall()
    bus = Bus(connect(shard.server.url), prefix=PREFIX, shards=SHARDS)
    in_log = 0 if CHUNKS else deltas  # reply pieces kept in the log per turn
    asyncio.run(_ensure_groups(bus))
    run = _run_clients(shard, procs, users, seconds, deltas, reply_chars)
    turns = max(1, run["turns"])
    cpu_per_turn = run["cpu"] / turns
    return {
        "deltas_per_turn": deltas, "reply_chars": reply_chars, "client_processes": procs,
        "users": procs * users, "seconds": seconds, "turns": run["turns"], "lost": run["lost"],
        "pieces_per_flush": round(run["flushes"][1] / max(1, run["flushes"][0]), 1),
        "wall_s": run["wall_s"], "turns_per_s": round(run["turns"] / run["wall_s"], 1),
        "redis_busy": round(run["cpu"] / run["wall_s"], 3),
        "redis_cpu_s_per_turn": round(cpu_per_turn, 7),
        "redis_commands_per_turn": round(run["commands"] / turns, 1),
        "client_cpu_s_per_turn": round(run["client_cpu"] / turns, 7),
        "turns_per_s_per_core": round(1 / cpu_per_turn) if cpu_per_turn else None,
        "commands_per_s_per_core": round(run["commands"] / run["cpu"]) if run["cpu"] else None,
        "turn_p50_ms": round(pct(run["lat"], 50) * 1000, 2),
        "turn_p99_ms": round(pct(run["lat"], 99) * 1000, 2),
        "log_events_per_turn": 3 + in_log + len(STATE_NAMES) * STATES,
        **_kept(shard, procs, users, deltas, 3 + in_log + len(STATE_NAMES) * STATES),
        "used_memory_bytes_per_turn": round((shard.used_memory() - run["mem0"]) / turns),
    }


def _kept(shard: _Shard, procs: int, users: int, deltas: int,
          events_per_turn: int) -> dict[str, Any]:
    """What the turns left in Redis, from sample sessions and the nodes' delivery streams."""
    sample = [(f"s{i % procs}-{i // procs}") for i in range(min(50, procs * users))]
    k = K.Keys(PREFIX)
    other_b = shard.key_bytes([f(s) for s in sample for f in (k.meta, k.turns, k.client_ids,
                                                               k.nodes, k.lock)])
    streams = [k.delivery(f"edge{i}") for i in range(procs)]
    entries = max(1, sum(int(shard.r.xlen(s)) for s in streams))
    stream_b = shard.key_bytes(streams)
    record_b = stream_b / max(1, sum(_records(shard, s) for s in streams))
    log_b, mem_b = _steady(shard, sample[:5], k, events_per_turn)
    return {"log_bytes_per_turn": round(log_b), "memory_bytes_per_turn": round(mem_b),
            "other_session_bytes": round(other_b / len(sample)),
            "delivery_bytes_per_entry": round(stream_b / entries),
            "delivery_bytes_per_record": round(record_b),
            # every turn delivers each of its log events and each piece (before chunks: one of
            # its log events), one record each (a tick's pieces for one node share an entry:
            # bytes per entry would count the entry once per piece in it)
            "delivery_bytes_per_turn": round(
                record_b * ((deltas if CHUNKS else 0) + events_per_turn))}


def _records(shard: _Shard, stream: str) -> int:
    """Deliveries in ``stream``: one per log event entry, one per line of a packed entry
    (``b``/``t``: the pieces of a tick for that node; ``m``: a script's several events;
    newline-separated, sessions/delivery_entries.py)."""
    r: Any = shard.r
    return sum(next((f.count(b"\n") + 1 for name in (b"b", b"t", b"m")
                     if (f := fields.get(name)) is not None), 1)
               for _, fields in r.xrange(stream))


def _steady(shard: _Shard, sample: list[str], k: K.Keys,
            events_per_turn: int) -> tuple[float, float]:
    """Log and memory bytes per turn at STEADY_TURNS turns per session: each sample session's
    own log entries (every turn finished: user, turn_start, [states,] [deltas,] reply) and
    memory items (two per turn), repeated into a scratch key of that many turns."""
    r: Any = shard.r  # the sync client's stubs type every reply as optional
    log_b: list[float] = []
    mem_b: list[float] = []
    for sid in sample:
        rows = r.xrange(k.log(sid))
        if len(rows) >= events_per_turn:
            n = min(STEADY_TURNS * events_per_turn, K.LOG_MAXLEN)
            pipe = r.pipeline(transaction=False)
            for i in range(n):
                pipe.xadd("scratch:log", rows[i % len(rows)][1])
            pipe.execute()
            log_b.append(int(r.memory_usage("scratch:log", samples=0)) / (n / events_per_turn))
        items = r.lrange(k.memory(sid), 0, -1)
        if len(items) >= 2:
            r.rpush("scratch:mem", *(items[i % len(items)] for i in range(2 * STEADY_TURNS)))
            mem_b.append(int(r.memory_usage("scratch:mem", samples=0)) / STEADY_TURNS)
        r.delete("scratch:log", "scratch:mem")
    return statistics.fmean(log_b or [0.0]), statistics.fmean(mem_b or [0.0])


async def _ensure_groups(bus: Bus) -> None:
    await bus.ensure_groups()
    await bus.close()


def run(a: argparse.Namespace) -> dict[str, Any]:
    levels_spec = [tuple(int(x) for x in lv.split(":")) for lv in a.levels.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp), appendonly=True).start()
        try:
            shard = _Shard(server)
            idle = bench_idle(shard, a.sessions)
            print(orjson.dumps(idle).decode(), file=sys.stderr, flush=True)
            levels = []
            for deltas, chars in levels_spec:
                lv = bench_level(shard, a.processes, a.users, a.seconds, deltas, chars)
                print(orjson.dumps(lv).decode(), file=sys.stderr, flush=True)
                levels.append(lv)
            version = shard.r.info("server")["redis_version"]
        finally:
            server.stop()
    return {"redis_version": version, "appendonly": True,
            "reply_path": ("chunks by tick" if BATCHED else "chunks") + (
                " + states" if STATES else "") if CHUNKS
            else "log deltas",
            "idle": idle, "levels": levels}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--sessions", type=int, required=True)
    p.add_argument("--levels", required=True)
    p.add_argument("--processes", type=int, required=True)
    p.add_argument("--users", type=int, required=True)
    p.add_argument("--seconds", type=float, required=True)
    print(orjson.dumps(run(p.parse_args())).decode())


if __name__ == "__main__":
    main()
