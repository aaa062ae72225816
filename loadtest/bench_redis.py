"""What one Redis shard (one redis-server process, one core) sustains for Agentia's own bus
operations, measured with the real :class:`sessions.bus.Bus` and its Lua scripts.

Why not ``redis-benchmark``: a turn is not one command. It is the edge's ``SUBMIT`` script, the
fan-out XADD to the delivery stream and the XADD to an inbound shard; the worker's XREADGROUP,
lock, ``BEGIN``, memory read and write, one ``APPEND`` script per log event (``turn_start``,
``reply``) with its fan-out, each coalesced chunk (partial buffer and delivery streams, not the
log), lock release and XACK; and the edge's XREAD of
its delivery stream. This benchmark runs exactly that sequence, from client processes that
play edge nodes and workers at once (each its own node id, its own consumer, its own
sessions), with many concurrent closed-loop users per process.

What it reports, for each level (deltas per turn, reply size):

* the client processes' own CPU per turn (edge and worker side of the bus calls: what one
  more delta costs a worker in Python, besides the Agents SDK);
* redis-server CPU-seconds per turn (from ``/proc/<pid>/stat``) and the commands Redis counted
  per turn (``INFO stats``: scripts' inner calls included); hence the turns/s and commands/s
  that would saturate one core: ``1 / cpu_s_per_turn``;
* ``redis_busy``: redis-server's CPU over the wall time. Below ~0.9 the client processes, not
  Redis, were the limit (the per-turn CPU is still Redis's own, measured);
* memory per turn kept in Redis, split by key (session log, conversation memory, the rest),
  from ``MEMORY USAGE`` of sample sessions;
* and, in a first phase, per idle session (the connection's share: ``OPEN`` script and the
  user's session list): redis-server CPU per session opened and memory per idle session.

A linear fit over the levels gives CPU per turn as ``base + per_delta * deltas``. Redis runs
with AOF (``appendfsync everysec``), as documented for production. Bounded in time; the
redis-server it starts is stopped by PID.

    python -m loadtest.bench_redis --record --notes "shared machine"

Recorded as ``redis-shard`` (``loadtest/results/redis-shard.json``) with ``--record``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import redis as sync_redis

from launch.redis_server import RedisServer
from loadtest.bench_core import cpu_s, pct
from loadtest.record import record
from sessions import keys as K
from sessions.bus import Bus, connect
from sessions.roles import Claimed

PREFIX = "bench"
SHARDS = 8
LEASE_MS = 30_000


# ------------------------------------------------------------------ one client process


class _Proc:
    """One client process: an edge node (users, delivery reader) and a worker (consumer)."""

    def __init__(self, bus: Bus, idx: int, deltas: int, reply_chars: int) -> None:
        self.bus, self.idx = bus, idx
        self.node, self.owner = f"edge{idx}", f"worker{idx}"
        self.deltas, self.reply_chars = deltas, reply_chars
        self.waiting: dict[tuple[str, int], asyncio.Future[None]] = {}
        self.latencies: list[float] = []
        self.turns = 0
        self.slots = asyncio.Semaphore(256)
        self.tasks: set[asyncio.Task[None]] = set()
        self.active: set[str] = set()
        self.poked: set[str] = set()
        self.early: set[tuple[str, int]] = set()

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
                await asyncio.wait_for(fut, 30)
            self.latencies.append(time.perf_counter() - t0)
            self.turns += 1

    async def deliver(self) -> None:
        """The edge's delivery loop: XREAD its own stream, resolve waiting users on replies."""
        last = b"0-0"
        while True:
            for d in await self.bus.read_delivery(self.node, last, 100):
                last, sid = d.id, d.session
                if d.chunk is not None:
                    continue
                ev = orjson.loads(d.event)
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

    async def run_entry(self, claim: Claimed) -> None:
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
                if not await bus.try_lock(sid, self.owner, LEASE_MS):
                    return
                while True:
                    turn = await bus.next_turn(sid)
                    if turn is not None:
                        await self.run_turn(sid, turn.offset, turn.text)
                    elif await bus.release_lock(sid, self.owner) != 0:
                        break
                if sid not in self.poked:
                    return
        finally:
            self.active.discard(sid)

    async def run_turn(self, sid: str, turn: int, text: str) -> None:
        bus, owner = self.bus, self.owner
        await bus.begin_attempt(sid, turn, owner)
        memory = bus.memory(sid, turn, owner)
        await memory.get_items()
        run = f"{turn}:1:{self.idx}"
        await bus.append(sid, {"type": "turn_start", "turn": turn, "attempt": 1}, owner=owner,
                         run=run)
        chunk = "x" * max(1, self.reply_chars // max(1, self.deltas))
        for seq in range(1, self.deltas + 1):
            event = orjson.dumps({"type": "chunk", "turn": turn, "attempt": 1, "seq": seq,
                                  "text": chunk})
            await bus.stream_chunk(sid, run, seq, event, chunk)
        reply = chunk * max(1, self.deltas)
        await memory.add_items([
            {"role": "user", "content": text},
            {"id": f"msg_{sid}_{turn}", "type": "message", "role": "assistant",
             "status": "completed",
             "content": [{"type": "output_text", "text": reply, "annotations": []}]}])
        await bus.append(sid, {"type": "reply", "turn": turn, "text": reply}, done=turn,
                         owner=owner)


def _client(url: str, idx: int, users: int, seconds: float, deltas: int, reply_chars: int,
            go: Any, q: Any) -> None:
    async def main() -> None:
        bus = Bus(connect(url, max_connections=128), prefix=PREFIX, shards=SHARDS)
        p = _Proc(bus, idx, deltas, reply_chars)
        sessions = await p.open(users)
        q.put(("opened", idx))
        await asyncio.get_running_loop().run_in_executor(None, go.wait)
        side = [asyncio.create_task(p.deliver()), asyncio.create_task(p.consume())]
        end, cpu0 = time.monotonic() + seconds, time.process_time()
        await asyncio.gather(*(p.user(s, u, end) for s, u in sessions))
        q.put(("done", p.turns, p.latencies, time.process_time() - cpu0))
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
        done = [_get(q, ps, seconds + 120) for _ in ps]
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
            "mem0": mem0, "lat": lat, "client_cpu": sum(d[3] for d in done)}


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
    asyncio.run(_ensure_groups(bus))
    run = _run_clients(shard, procs, users, seconds, deltas, reply_chars)
    turns = max(1, run["turns"])
    sample = [(f"s{i % procs}-{i // procs}") for i in range(min(50, procs * users))]
    k = K.Keys(PREFIX)
    log_b = shard.key_bytes([k.log(s) for s in sample])
    mem_b = shard.key_bytes([k.memory(s) for s in sample])
    other_b = shard.key_bytes([f(s) for s in sample for f in (k.meta, k.turns, k.client_ids,
                                                               k.nodes, k.lock)])
    # turns the sampled sessions ran: every turn appended deltas + 3 events (user,
    # turn_start, deltas, reply) and all of them finished
    seqs = [int(shard.r.hget(k.meta(s), "seq") or 0) for s in sample]
    per_sample_turns = max(1, sum(seqs) // (deltas + 3))
    cpu_per_turn = run["cpu"] / turns
    return {
        "deltas_per_turn": deltas, "reply_chars": reply_chars, "client_processes": procs,
        "users": procs * users, "seconds": seconds, "turns": run["turns"],
        "wall_s": run["wall_s"], "turns_per_s": round(run["turns"] / run["wall_s"], 1),
        "redis_busy": round(run["cpu"] / run["wall_s"], 3),
        "redis_cpu_s_per_turn": round(cpu_per_turn, 7),
        "redis_commands_per_turn": round(run["commands"] / turns, 1),
        "client_cpu_s_per_turn": round(run["client_cpu"] / turns, 7),
        "turns_per_s_per_core": round(1 / cpu_per_turn) if cpu_per_turn else None,
        "commands_per_s_per_core": round(run["commands"] / run["cpu"]) if run["cpu"] else None,
        "turn_p50_ms": round(pct(run["lat"], 50) * 1000, 2),
        "turn_p99_ms": round(pct(run["lat"], 99) * 1000, 2),
        "log_bytes_per_turn": round(log_b / per_sample_turns),
        "memory_bytes_per_turn": round(mem_b / per_sample_turns),
        "other_session_bytes": round(other_b / len(sample)),
        "used_memory_bytes_per_turn": round((shard.used_memory() - run["mem0"]) / turns),
    }


async def _ensure_groups(bus: Bus) -> None:
    await bus.ensure_groups()
    await bus.close()


def fit(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-turn figures as ``base + per_delta * deltas + per_reply_char * chars``: the slope on
    deltas from levels of equal reply size, the slope on size from levels of equal deltas (the
    default levels are designed for that), the base from all of them."""
    out: dict[str, Any] = {}
    for key, name, digits in (("redis_cpu_s_per_turn", "redis_cpu_s_per", 9),
                              ("client_cpu_s_per_turn", "client_cpu_s_per", 9),
                              ("redis_commands_per_turn", "commands_per", 2),
                              ("log_bytes_per_turn", "log_bytes_per", 2),
                              ("memory_bytes_per_turn", "memory_bytes_per", 2)):
        base, per_delta, per_char = _plane(levels, key)
        prefix = name.removesuffix("_per")
        out[f"{prefix}_base" if "cpu" not in name else f"{key}_base"] = round(base, digits)
        out[f"{name}_delta"] = round(per_delta, digits)
        out[f"{name}_reply_char"] = round(per_char, digits)
    out["commands_per_turn_base"] = out.pop("commands_base")
    cores = [lv["commands_per_s_per_core"] for lv in levels if lv["commands_per_s_per_core"]]
    out["commands_per_s_per_core"] = round(statistics.fmean(cores)) if cores else None
    return out


def _plane(levels: list[dict[str, Any]], key: str) -> tuple[float, float, float]:
    def slope(x: str, fixed: str) -> float:
        common = statistics.mode(lv[fixed] for lv in levels)
        same = [lv for lv in levels if lv[fixed] == common]
        if len({lv[x] for lv in same}) < 2:
            return 0.0
        return statistics.linear_regression([lv[x] for lv in same],
                                            [lv[key] for lv in same]).slope

    b, k = slope("deltas_per_turn", "reply_chars"), slope("reply_chars", "deltas_per_turn")
    a = statistics.fmean(lv[key] - b * lv["deltas_per_turn"] - k * lv["reply_chars"]
                         for lv in levels)
    return a, b, k


def bench(a: argparse.Namespace) -> dict[str, Any]:
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
    return {"redis_version": version, "appendonly": True, "idle": idle, "levels": levels,
            "fit": fit(levels)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=20_000, help="idle sessions opened")
    p.add_argument("--levels", default="4:800,16:800,4:3200",
                   help="deltas:reply_chars per level, comma-separated")
    p.add_argument("--processes", type=int, default=2, help="client processes")
    p.add_argument("--users", type=int, default=200, help="concurrent users per process")
    p.add_argument("--seconds", type=float, default=8.0, help="per level")
    p.add_argument("--record", nargs="?", const="redis-shard", metavar="NAME")
    p.add_argument("--notes", default="")
    a = p.parse_args()
    out = bench(a)
    print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
    if a.record:
        print(f"recorded {record(a.record, out, notes=a.notes)}", file=sys.stderr)


if __name__ == "__main__":
    main()
