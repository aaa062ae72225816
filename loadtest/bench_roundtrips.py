"""A turn's round trips (issue 13): what long turns cost the worker in Redis round trips and
Redis in read events (event-loop wake-ups with a request), and the worker's pool checkouts
(those taking redis-py's slow path apart) and asyncio tasks, with the code of one or more
checkouts side by side. Counts, not CPU time: they hold on a saturated machine.

For each ``--tree`` and each of ``--rounds`` rounds (trees alternated, the order reversed every
other round), a child process running that checkout's code (``PYTHONPATH``) starts a fresh
redis-server, registers one live node, opens ``--sessions`` sessions held by it and submits one
~300-word turn each, all at once; a worker of that checkout (in the child, burst mode, the demo
model at ``--word-delay`` s per word) runs them. Figures per turn: the worker's round trips (its
commands and pipelines, counted at the client; its polling, XREADGROUP/XAUTOCLAIM, left out),
by kind; Redis ``total_reads_processed`` and ``total_commands_processed`` (INFO stats; the
polling included); and the machine's idle share over the run (/proc/stat).

    python -m loadtest.bench_roundtrips --tree /work/wt/before --tree . --rounds 2 --record \
        --name turn-roundtrips-mine

Results: ``loadtest/results/<NAME>.json`` (``turn-roundtrips.json`` by default);
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
POLLING = ("XREADGROUP", "XAUTOCLAIM")


def _idle() -> tuple[int, int]:
    fields = [int(v) for v in pathlib.Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    return fields[3] + fields[4], sum(fields)


async def child(sessions: int, word_delay: float) -> dict[str, Any]:
    """One run, in a process whose ``PYTHONPATH`` is the checkout under test."""
    from agents import Agent

    from launch.redis_server import RedisServer
    from loadtest.bench_turnpath import DEMO_WORDS, VOCAB
    from sessions.bus import Bus, connect
    from sessions.demo import DemoModel
    from sessions.runtime import ModelConfig, model_provider
    from sessions.worker import Worker, WorkerConfig

    srv = RedisServer(Path(tempfile.mkdtemp()), appendonly=False).start()
    try:
        bus = Bus(connect(srv.url), prefix="r" + uuid.uuid4().hex[:6], shards=4)
        await bus.ensure_groups()
        await bus.heartbeat_node("n1")
        text = " ".join(VOCAB[i % len(VOCAB)] for i in range(300 - DEMO_WORDS))
        for i in range(sessions):
            await bus.open_session(f"s{i}", "ann", "n1")
        kinds: dict[str, int] = {}
        seen = {"checkouts": 0, "tasks": 0}
        command, pipeline = bus.redis.execute_command, bus.redis.pipeline

        async def counted(*a: Any, **kw: Any) -> Any:
            if a[0] not in POLLING:
                kinds[str(a[0])] = kinds.get(str(a[0]), 0) + 1
            return await command(*a, **kw)

        def piped(*a: Any, **kw: Any) -> Any:
            kinds["pipeline"] = kinds.get("pipeline", 0) + 1
            return pipeline(*a, **kw)

        worker = Worker(bus, Agent(name="long", model=DemoModel(word_delay=word_delay)),
                        model_provider(ModelConfig(demo_word_delay=word_delay)),
                        WorkerConfig(block_ms=50))
        for i in range(sessions):
            await bus.submit(f"s{i}", "m", text, user="ann")
        before = await bus.redis.info("stats")
        idle0, all0 = _idle()
        began = time.monotonic()
        bus.redis.execute_command, bus.redis.pipeline = counted, piped
        pool, loop = bus.redis.connection_pool, asyncio.get_running_loop()
        checkout = pool.get_connection
        slow0 = getattr(pool, "slow", None)  # QuickPool's (session 11); redis-py's: every one

        async def checked(*a: Any, **kw: Any) -> Any:
            seen["checkouts"] += 1
            return await checkout(*a, **kw)

        def task(lp: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
            seen["tasks"] += 1
            return asyncio.Task(coro, loop=lp, **kw)
        pool.get_connection = checked
        loop.set_task_factory(task)
        try:
            async with asyncio.timeout(300):
                await worker.run(burst=True)
        finally:
            bus.redis.execute_command, bus.redis.pipeline = command, pipeline
            pool.get_connection = checkout
            loop.set_task_factory(None)
        slow = seen["checkouts"] if slow0 is None else pool.slow - slow0
        wall = time.monotonic() - began
        idle1, all1 = _idle()
        after = await bus.redis.info("stats")
        await bus.close()
    finally:
        srv.stop()
    n = max(1, worker.turns_done)
    return {
        "turns": worker.turns_done, "wall_s": round(wall, 2),
        "worker_round_trips_per_turn": round(sum(kinds.values()) / n, 2),
        "worker_round_trips_by_kind": {k: round(v / n, 2) for k, v in sorted(kinds.items())},
        "redis_reads_per_turn": round((after["total_reads_processed"]
                                       - before["total_reads_processed"] - 1) / n, 2),
        "redis_commands_per_turn": round((after["total_commands_processed"]
                                          - before["total_commands_processed"] - 1) / n, 2),
        "machine_idle_share": round((idle1 - idle0) / max(1, all1 - all0), 4),
        # the worker's Redis pool checkouts (its polling included) and those that took
        # redis-py's locked, timed path, and the asyncio tasks it created (issue 13)
        "pool_checkouts_per_turn": round(seen["checkouts"] / n, 2),
        "slow_checkouts_per_turn": round(slow / n, 2),
        "tasks_per_turn": round(seen["tasks"] / n, 2),
    }


def one(tree: Path, sessions: int, word_delay: float) -> dict[str, Any]:
    from loadtest.attack.edgeproc import tree_commit

    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(sessions),
         str(word_delay)], cwd=tree, capture_output=True, text=True, timeout=600, check=True,
        env={**__import__("os").environ, "PYTHONPATH": f"{tree}:{ROOT}",
             "AGENTIA_LOG_LEVEL": "warning"})
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(tree=str(tree), commit=tree_commit(tree))
    return res


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        print(json.dumps(asyncio.run(child(int(sys.argv[2]), float(sys.argv[3])))))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, help="checkout (repeatable)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=40)
    ap.add_argument("--word-delay", type=float, default=0.02)
    ap.add_argument("--record", action="store_true",
                    help="write loadtest/results/<--name>.json")
    ap.add_argument("--name", default="turn-roundtrips",
                    help="the record's name (default turn-roundtrips: pick a new one rather "
                         "than overwrite another's figures)")
    a = ap.parse_args()
    trees = [t.resolve() for t in (a.tree or [ROOT])]
    runs = []
    for r in range(a.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            res = one(tree, a.sessions, a.word_delay) | {"round": r}
            print(json.dumps(res), flush=True)
            runs.append(res)
    if a.record:
        from loadtest.record import record

        print(record(a.name, {"sessions": a.sessions, "word_delay_s": a.word_delay,
                              "runs": runs}))


if __name__ == "__main__":
    main()
