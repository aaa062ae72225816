"""One run of the Redis shard benchmark (loadtest/bench_redis.py) against one checkout: the bus
calls of a turn replayed by hand with that checkout's :class:`sessions.bus.Bus`.

Run as a script with the checkout first on ``PYTHONPATH`` (bench_redis does), so that
``sessions`` and ``launch`` are the checkout's while this file is the benchmark's own: it
imports nothing from ``loadtest``. It prints one JSON document (idle phase, levels). Its edge
and worker side, what a client process plays, is loadtest/replay_worker.py, shipped next to it
and loaded by its path (the same property: nothing from ``loadtest``).

A checkout whose bus has ``stream_chunk`` sends reply pieces as chunks (partial buffer and
delivery streams, not the log: docs/architecture.md "Reply text: chunks off the log"); an
older one appends each piece to the log as a ``delta`` event (one ``APPEND`` script and its
fan-out). Both are played as their worker plays them: since session 14 (``RIDES_TICK``) a
turn's ending rides the tick of its last piece, as the worker's does (sessions/worker.py
``_finish``), where an older checkout's goes in a round trip of its own after that tick.
"""

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import redis as sync_redis

from launch.redis_server import RedisServer
from sessions import keys as K
from sessions.bus import Bus, connect


def _load_part(name: str) -> ModuleType:
    """``name``.py, shipped next to this file, loaded by its path: as a script run with an old
    checkout first on the path, this file imports nothing from ``loadtest``."""
    spec = importlib.util.spec_from_file_location(
        f"redis_replay_{name}", Path(__file__).resolve().with_name(f"{name}.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


W = _load_part("replay_worker")
"""The edge and worker side: a client process (``W.Proc``) and what the checkout's bus can do."""
PREFIX, SHARDS = W.PREFIX, W.SHARDS
STEADY_TURNS = 20
"""Turns a session's log and memory hold in the capacity model (--turns-per-session): bytes per
turn are measured at that many (a stream's first listpack node takes 4 KiB: a log of one or
two turns, all a 150-piece level runs per session, costs more per turn than one of twenty)."""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def _client(url: str, idx: int, users: int, seconds: float, deltas: int, reply_chars: int,
            go: Any, q: Any) -> None:
    async def main() -> None:
        # as a worker loads the Agents SDK at start: a turn's first bus.memory() imports it,
        # blocking the loop (~4 s here) inside the measured time
        importlib.import_module("sessions.memory")
        # a connection for every user, worker slot and loop: callers queueing on the pool is
        # not what is measured (and with 128, 22 of 200 users hung in their first submit)
        bus = Bus(connect(url, max_connections=users + 512), prefix=PREFIX, shards=SHARDS)
        p = W.Proc(bus, idx, deltas, reply_chars)
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
            await asyncio.wait(set(p.tasks), timeout=W.REPLY_WAIT_S)
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
        done = [_get(q, ps, seconds + W.REPLY_WAIT_S + 120) for _ in ps]
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
        await W.Proc(bus, 0, 0, 0).open(sessions)
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
    in_log = 0 if W.CHUNKS else deltas  # reply pieces kept in the log per turn
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
        "log_events_per_turn": 3 + in_log + len(W.STATE_NAMES) * W.STATES,
        **_kept(shard, procs, users, deltas, 3 + in_log + len(W.STATE_NAMES) * W.STATES),
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
                record_b * ((deltas if W.CHUNKS else 0) + events_per_turn))}


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
            "reply_path": ("chunks by tick" if W.BATCHED else "chunks") + (
                " + states" if W.STATES else "") if W.CHUNKS
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
