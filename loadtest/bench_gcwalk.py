"""The worker's garbage collections per short turn (session 15): how many collections of each
generation a demo turn causes and how many objects they walk, with the code of one or more
checkouts side by side. Counts, not CPU time: they hold on a saturated machine.

For each ``--tree`` and each of ``--rounds`` rounds (trees alternated), a child process running
that checkout's code (``PYTHONPATH``) goes through that checkout's own ``agentia worker``
start-up (``sessions.main.run``: its agents, uvloop and, where the checkout has one, its
garbage-collector tuning), but instead of serving it runs a burst worker in-process on a fresh
redis-server: ``--sessions`` sessions held by one live node, the demo agent at no word delay,
``--warm`` rounds of one turn per session, then ``--turns`` counted rounds with a
``gc.callbacks`` hook counting every collection by generation and the objects in the
generations it walks (``gc.get_objects``, frozen ones excluded, as the collector excludes them).

    python -m loadtest.bench_gcwalk --tree /work/wt/base15 --tree . --record

Results: ``loadtest/results/<NAME>.json`` (``gcwalk.json`` by default); docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


async def burst(sessions: int, warm: int, turns: int) -> dict[str, Any]:
    """Run in the child, inside the checkout's own start-up (see :func:`child`)."""
    from launch.redis_server import RedisServer
    from sessions.bus import Bus, connect
    from sessions.demo import demo_agent
    from sessions.runtime import ModelConfig, model_provider
    from sessions.worker import Worker, WorkerConfig

    walks = {g: [0, 0] for g in range(3)}

    def hook(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            g = info["generation"]
            walks[g][0] += 1
            walks[g][1] += sum(len(gc.get_objects(i)) for i in range(g + 1))

    srv = RedisServer(Path(tempfile.mkdtemp()), appendonly=False).start()
    try:
        bus = Bus(connect(srv.url), prefix="g" + uuid.uuid4().hex[:6], shards=8)
        await bus.ensure_groups()
        await bus.heartbeat_node("n1")
        for i in range(sessions):
            await bus.open_session(f"s{i}", "ann", "n1")
        worker = Worker(bus, demo_agent, model_provider(ModelConfig(demo_word_delay=0)),
                        WorkerConfig(block_ms=20, concurrency=max(256, sessions)))
        cpu = 0.0
        for rnd in range(warm + turns):
            for i in range(sessions):
                await bus.submit(f"s{i}", f"m{rnd}", "hello there", user="ann")
            if rnd == warm:
                gc.callbacks.append(hook)
            began = time.process_time()
            async with asyncio.timeout(120):
                await worker.run(burst=True)
            cpu += time.process_time() - began if rnd >= warm else 0.0
        gc.callbacks.remove(hook)
        await bus.close()
    finally:
        srv.stop()
    n = sessions * turns
    return {"turns": n, "frozen_objects": gc.get_freeze_count(),
            "thresholds": list(gc.get_threshold()),
            "collections_per_turn": {str(g): round(c / n, 4) for g, (c, _) in walks.items()},
            "objects_walked_per_turn": {str(g): round(o / n, 1) for g, (_, o) in walks.items()},
            "objects_walked_per_turn_total": round(sum(o for _, o in walks.values()) / n, 1),
            "process_cpu_ms_per_turn_with_hook": round(cpu * 1000 / n, 3)}


def child(sessions: int, warm: int, turns: int) -> dict[str, Any]:
    """The checkout's ``agentia worker`` start-up with ``asyncio.run`` given the burst."""
    from agentia.settings import WorkerSettings, from_env
    from sessions import main

    out: dict[str, Any] = {}
    real = asyncio.run

    def run(coro: Any) -> None:
        coro.close()  # the worker's own serving: not here
        out.update(real(burst(sessions, warm, turns)))

    asyncio.run = run  # type: ignore[assignment]
    try:
        main.run(from_env(WorkerSettings), None)
    finally:
        asyncio.run = real
    return out


def one(tree: Path, a: argparse.Namespace) -> dict[str, Any]:
    from loadtest.attack.edgeproc import tree_commit

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(a.sessions),
         str(a.warm), str(a.turns)], cwd=tree, capture_output=True, text=True, timeout=600,
        check=True, env={**env, "PYTHONPATH": f"{tree}:{ROOT}", "AGENTIA_LOG_LEVEL": "warning"})
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(tree=str(tree), commit=tree_commit(tree))
    return res


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        print(json.dumps(child(*map(int, sys.argv[2:]))))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, help="checkout (repeatable)")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--sessions", type=int, default=200)
    ap.add_argument("--warm", type=int, default=2, help="uncounted rounds first")
    ap.add_argument("--turns", type=int, default=3, help="counted rounds (turns per session)")
    ap.add_argument("--record", action="store_true", help="write loadtest/results/<--name>.json")
    ap.add_argument("--name", default="gcwalk")
    a = ap.parse_args()
    if not (1 <= a.sessions <= 2000 and 0 <= a.warm <= 10 and 1 <= a.turns <= 20):
        ap.error("--sessions 1-2000, --warm 0-10, --turns 1-20")
    trees = [t.resolve() for t in (a.tree or [ROOT])]
    runs = []
    for r in range(a.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            res = one(tree, a) | {"round": r}
            print(json.dumps(res), flush=True)
            runs.append(res)
    if a.record:
        from loadtest.record import record

        print(record(a.name, {"sessions": a.sessions, "warm": a.warm, "turns": a.turns,
                              "runs": runs}))


if __name__ == "__main__":
    main()
