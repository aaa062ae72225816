"""A demo turn's SDK and model CPU in-process (issue 13, session 19): the direct path
(sessions/direct_run.py) with no Redis, no edge, no other turn, so that the worker's own part
and the demo model's part of a turn can be told apart, with the code of one or more checkouts
side by side.

For each ``--tree`` and each of ``--rounds`` rounds (trees alternated), a child process running
that checkout's code (``PYTHONPATH``), with its SDK speedups installed, SDK tracing off and the
worker's garbage-collector settings (``agentia.collector.tune`` with the worker's defaults,
after start-up is frozen), times:

* ``turn``: ``runtime.stream_turn`` of the demo agent (no word delay) on one message, over a
  ``RedisMemory`` preloaded with ``--items`` plain items (as a worker's memory cache gives
  them: no Redis read; the turn's two saves stay in the memory, unwritten, as a worker's do
  until the ending): reading the memory, the model's input, settings and tools, the save of the
  input, the model's stream through the pump, the text, the save of the reply.
* ``demo``: the demo model's ``stream_response`` alone on the same input, its events
  consumed: the offline model's own cost, which a real model's turn does not pay.
* ``worker`` = ``turn`` - ``demo``: the direct path's own part (a real model's turn pays it,
  plus that model's client).

Each figure is CPU µs per turn (``time.process_time``), the least of ``--repeats`` batches of
``--turns`` turns after ``--warm`` unmeasured ones: the least is the code's cost with the fewest
interruptions by other processes on a shared box. Not the whole worker: ``bench_worker`` has
that (Redis, the turn's scripts, the delivery).

    python -m loadtest.bench_direct --tree /work/wt/base19 --tree . --rounds 2 --record

Results: ``loadtest/results/<NAME>.json`` (``direct-turn.json`` by default); docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def history(n: int) -> list[dict[str, Any]]:
    """``n`` plain items as the demo's turns leave them in a memory (user, reply, ...)."""
    out: list[dict[str, Any]] = []
    for i in range(n):
        if i % 2 == 0:
            out.append({"content": f"message {i} of the session", "role": "user"})
        else:
            out.append({"id": "msg_demo", "content": [{
                "annotations": [], "text": f"You said: message {i - 1} of the session. I am a "
                "demo agent; I can tell time, do sums, book tables. (demo model)",
                "type": "output_text", "logprobs": []}], "role": "assistant",
                "status": "completed", "type": "message"})
    return out


async def measure(items: int, warm: int, turns: int, repeats: int) -> dict[str, Any]:
    """Run in the child (the checkout's code on the path)."""
    from agents import ModelSettings, set_tracing_disabled
    from agents.models.interface import ModelTracing

    from agentia import collector
    from agentia.settings import WorkerSettings
    from sessions import keys as K
    from sessions import runtime, sdk_speedups
    from sessions.demo import DemoProvider, demo_agent
    from sessions.memory import RedisMemory
    from sessions.memory_cache import Items

    set_tracing_disabled(True)
    sdk_speedups.install()
    provider, keys, past = DemoProvider(0), K.Keys("bench"), history(items)
    model = provider.get_model(None)
    stored: list[list[bytes]] = []

    async def turn(n: int) -> None:
        memory = RedisMemory(None, keys, "s", n, remember=object())  # type: ignore[arg-type]
        memory.preload(Items(past, len(past)))
        async for _ in runtime.stream_turn(demo_agent, f"message {n} of the session", memory,
                                           provider):
            pass
        stored.append(memory.take_unsaved())
        del stored[:-1]

    async def demo(n: int) -> None:
        given: Any = [*past, {"content": f"message {n} of the session", "role": "user"}]
        async for _ in model.stream_response(
                None, given, ModelSettings(), [], None, [], ModelTracing.DISABLED,
                previous_response_id=None, conversation_id=None, prompt=None):
            pass

    async def best(step: Any) -> float:
        for n in range(warm):
            await step(n)
        least = float("inf")
        for _ in range(repeats):
            began = time.process_time()
            for n in range(turns):
                await step(n)
            least = min(least, (time.process_time() - began) / turns)
        return least * 1e6

    await turn(0)  # everything imported and made once
    gc.collect()
    gc.freeze()
    s = WorkerSettings()
    collector.tune(s.worker_gc_gen0_threshold, s.worker_gc_gen1_threshold, who="bench")
    turn_us, demo_us = await best(turn), await best(demo)
    return {"items": items, "turn_us": round(turn_us, 1), "demo_us": round(demo_us, 1),
            "worker_us": round(turn_us - demo_us, 1),
            "stored_sample": [b.decode() for b in stored[-1]]}


def one(tree: Path, a: argparse.Namespace) -> dict[str, Any]:
    from loadtest.attack.edgeproc import tree_commit

    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(a.items), str(a.warm),
         str(a.turns), str(a.repeats)], cwd=tree, capture_output=True, text=True, timeout=600,
        check=True, env={**env, "PYTHONPATH": f"{tree}:{ROOT}", "AGENTIA_LOG_LEVEL": "warning"})
    res: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    res.update(tree=str(tree), commit=tree_commit(tree))
    return res


def main() -> None:
    if len(sys.argv) == 6 and sys.argv[1] == "--child":
        print(json.dumps(asyncio.run(measure(*map(int, sys.argv[2:])))))
        return
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", type=Path, help="checkout (repeatable)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--items", type=int, default=94, help="items of memory (bench_worker's "
                    "--turns 95 averages 94)")
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--turns", type=int, default=2000, help="turns a batch")
    ap.add_argument("--repeats", type=int, default=5, help="batches (the least counts)")
    ap.add_argument("--record", action="store_true", help="write loadtest/results/<--name>.json")
    ap.add_argument("--name", default="direct-turn")
    a = ap.parse_args()
    if not (0 <= a.items <= 200 and 0 <= a.warm <= 10_000 and 1 <= a.turns <= 20_000
            and 1 <= a.repeats <= 20):
        ap.error("--items 0-200, --warm 0-10000, --turns 1-20000, --repeats 1-20")
    trees = [t.resolve() for t in (a.tree or [ROOT])]
    runs = []
    for r in range(a.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            res = one(tree, a) | {"round": r}
            print(json.dumps({k: v for k, v in res.items() if k != "stored_sample"}), flush=True)
            runs.append(res)
    samples = {json.dumps(r["stored_sample"]) for r in runs}
    print("the stored items are the same in every run:", len(samples) == 1)
    if a.record:
        from loadtest.record import record

        print(record(a.name, {"items": a.items, "turns": a.turns, "repeats": a.repeats,
                              "runs": runs, "same_stored_items": len(samples) == 1},
                     notes="in-process demo turns on the direct path, no Redis; CPU µs a "
                           "turn, the least of the batches; demo = the demo model's stream "
                           "alone, worker = turn - demo"))


if __name__ == "__main__":
    main()
