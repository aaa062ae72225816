"""What one short demo turn costs a worker's event loop, counted (issue 13, session 19): tasks
created, task steps, callbacks run, timers started, loop iterations (wake-ups), writes to its
sockets, Redis replies read and socket reads, Redis commands; with the code of one or more
checkouts side by side.

For each ``--tree`` (repeatable) and round: a fresh redis-server, a worker of that tree in a
child process (``--child``: the demo agent, no word delay, default settings, on the plain
asyncio loop, whose Python classes can be counted: ``Handle._run``, ``_run_once``,
``call_at``, the task factory, the socket transport's ``write``, the hiredis parser's socket
read), and a driver process (``--driver``) that plays an edge node as
``loadtest/bench_worker.py`` does and submits ``--turns`` turns over ``--sessions`` sessions
at ``--rate`` a second (0: all at once, a burst) after two warm-up turns a session. Counts are
taken in the worker's thread between the first submit and the last ending, divided by the
turns. They are counts, not times: the worker's CPU here is the instrumented plain loop's,
not what a worker on uvloop spends.

    python -m loadtest.turn_counts --tree /work/wt/base19 --tree . --rate 200 --record
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


def _hooks(counts: collections.Counter[str], on: list[bool]) -> None:
    """Count what the loop does while ``on[0]`` (the worker's thread only)."""
    import asyncio.base_events
    import asyncio.events
    import asyncio.selector_events

    import redis._parsers.hiredis
    import redis.asyncio.connection

    # patched by name (private classes of asyncio and redis-py): Any to the type checker
    be: Any = asyncio.base_events
    ev: Any = asyncio.events
    se: Any = asyncio.selector_events
    hp: Any = redis._parsers.hiredis
    rc: Any = redis.asyncio.connection
    run, once, write = ev.Handle._run, be.BaseEventLoop._run_once, se._SelectorSocketTransport.write
    call_at = be.BaseEventLoop.call_at
    read, reply = hp._AsyncHiredisParser.read_from_socket, rc.Connection.read_response

    def _run(self: Any) -> None:
        if on[0]:
            counts["callbacks"] += 1
            cb = getattr(self, "_callback", None)  # a task's step, or its wake-up (C Task)
            if (type(cb).__name__ == "TaskStepMethWrapper"
                    or getattr(cb, "__qualname__", "") == "Task.task_wakeup"):
                counts["task steps"] += 1
        run(self)

    def _once(self: Any) -> None:
        if on[0]:
            counts["loop iterations"] += 1
        once(self)

    def _call_at(self: Any, *a: Any, **kw: Any) -> Any:
        if on[0]:  # call_later and asyncio.timeout come here too
            counts["timers"] += 1
        return call_at(self, *a, **kw)

    def _write(self: Any, data: Any) -> None:
        if on[0]:
            counts["socket writes"] += 1
        write(self, data)

    async def _read(self: Any) -> Any:
        if on[0]:
            counts["redis socket reads"] += 1
        return await read(self)

    async def _reply(self: Any, *a: Any, **kw: Any) -> Any:
        if on[0]:
            counts["redis replies read"] += 1
        return await reply(self, *a, **kw)
    ev.Handle._run = _run
    be.BaseEventLoop._run_once = _once
    be.BaseEventLoop.call_at = _call_at
    se._SelectorSocketTransport.write = _write
    hp._AsyncHiredisParser.read_from_socket = _read
    rc.Connection.read_response = _reply


async def child(a: argparse.Namespace) -> dict[str, Any]:
    """A worker of the tree on the path, counted while the driver's turns run."""
    from launch.redis_server import RedisServer
    from sessions.bus import Bus, connect
    from sessions.runtime import ModelConfig, load_agent, model_provider
    from sessions.worker import Worker, WorkerConfig

    counts: collections.Counter[str] = collections.Counter()
    on = [False]
    _hooks(counts, on)
    loop = asyncio.get_running_loop()

    def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
        if on[0]:
            counts["tasks"] += 1
        return asyncio.Task(coro, loop=loop, **kw)
    loop.set_task_factory(factory)
    srv = RedisServer(Path(a.logs) / f"redis-{uuid.uuid4().hex[:6]}").start()
    try:
        bus = Bus(connect(srv.url), prefix="agentia")
        worker = Worker(bus, load_agent("sessions.demo:demo_agent"),
                        model_provider(ModelConfig(demo_word_delay=0)), WorkerConfig())
        run = asyncio.create_task(worker.run())
        drv = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE), "--driver", srv.url, "--rate", str(a.rate), "--turns",
            str(a.turns), "--sessions", str(a.sessions), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE)
        assert drv.stdin is not None and drv.stdout is not None
        assert (await drv.stdout.readline()).startswith(b"READY")
        stats0 = await bus.redis.info("commandstats")
        on[0], cpu0 = True, time.thread_time()
        drv.stdin.write(b"go\n")
        await drv.stdin.drain()
        took = float((await drv.stdout.readline()).split()[1])
        on[0], cpu = False, time.thread_time() - cpu0
        stats1 = await bus.redis.info("commandstats")
        await drv.wait()
        worker.stopping.set()
        run.cancel()
        await asyncio.gather(run, return_exceptions=True)
        out = {k: round(v / a.turns, 2) for k, v in sorted(counts.items())}
        out["redis commands (all clients)"] = round(
            (sum(v["calls"] for v in stats1.values())
             - sum(v["calls"] for v in stats0.values())) / a.turns, 1)
        out["instrumented worker CPU ms"] = round(cpu * 1000 / a.turns, 3)
        out["seconds"] = took
        return out
    finally:
        srv.stop()


async def driver(a: argparse.Namespace) -> None:
    """Warm up, wait for ``go`` on stdin, submit the turns, print ``DONE <seconds>``."""
    from loadtest.worker_stack import Tally, deliveries, open_sessions, submit
    from sessions.bus import Bus, connect

    bus, tally, stop = Bus(connect(a.driver), prefix="agentia"), Tally(), asyncio.Event()
    sessions = [f"s{i}" for i in range(a.sessions)]
    await open_sessions(bus, sessions)
    reader = asyncio.create_task(deliveries(bus, tally, stop))

    async def ended(n: int, limit: float = 120) -> None:
        end = time.monotonic() + limit
        while len(tally.ended) < n:
            assert time.monotonic() < end, f"{len(tally.ended)} of {n} turns ended"
            await asyncio.sleep(0.005)
    for t in range(2):
        await asyncio.gather(*(submit(bus, tally, s, t) for s in sessions))
    await ended(2 * a.sessions)
    await asyncio.sleep(0.5)
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    done0, t0 = len(tally.ended), time.monotonic()
    sent = []
    for i in range(a.turns):
        sent.append(asyncio.ensure_future(submit(bus, tally, sessions[i % a.sessions], 100 + i)))
        if a.rate and (d := t0 + (i + 1) / a.rate - time.monotonic()) > 0:
            await asyncio.sleep(d)
    await asyncio.gather(*sent)
    await ended(done0 + a.turns)
    print(f"DONE {time.monotonic() - t0:.2f}", flush=True)
    stop.set()
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tree", action="append", default=[])
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--rate", type=float, default=200.0, help="turns/s (0: a burst)")
    p.add_argument("--turns", type=int, default=2000)
    p.add_argument("--sessions", type=int, default=200)
    p.add_argument("--record", nargs="?", const="turn-counts", metavar="NAME")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--driver", help=argparse.SUPPRESS)
    p.add_argument("--logs", default="/tmp", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        print(json.dumps(asyncio.run(child(a))), flush=True)
        return
    if a.driver:
        asyncio.run(driver(a))
        return
    runs = []
    trees = [Path(t).resolve() for t in a.tree or ["."]]
    for r in range(a.rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            out = subprocess.run(
                [sys.executable, str(HERE), "--child", "--rate", str(a.rate), "--turns",
                 str(a.turns), "--sessions", str(a.sessions), "--logs", str(Path("/tmp"))],
                cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True,
                text=True, timeout=600, check=True).stdout
            figures = json.loads(out.strip().splitlines()[-1])
            from loadtest.attack.edgeproc import tree_commit
            runs.append({"tree": str(tree), "commit": tree_commit(tree), "round": r, **figures})
            print(json.dumps(runs[-1]), flush=True)
    if a.record:
        from loadtest.record import record
        print(record(a.record, {"runs": runs, "rate": a.rate, "turns": a.turns,
                                "sessions": a.sessions}))


if __name__ == "__main__":
    main()
