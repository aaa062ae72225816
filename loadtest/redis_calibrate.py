"""What redis-server's CPU costs per round trip and per command on this machine (issue 13,
session 14): the weights behind "a round trip weighs as much as ~6 commands"
(docs/architecture.md, "Where redis-server's CPU goes per turn").

A fresh redis-server as the turn path's (AOF, fsync every second), its CPU read from INFO cpu
around ``--calls`` calls of each kind: one command a round trip (``PING``, ``RPUSHX``, an
empty script), pipelined commands (``RPUSHX``, ``EXPIRE``, ``XADD`` of a chunk-sized field and
of a delivery-entry-sized one, 40 a pipeline as a tick's), and a script of ten ``EXPIRE``s.
Each is measured ``--rounds`` times; on a shared machine take the lowest.

    python -m loadtest.redis_calibrate --calls 20000 --rounds 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from launch.redis_server import RedisServer

TEXT = "x" * 60
"""About one 40 ms piece of a 50 tokens/s reply with its record around it."""


def _cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _single(r: redis.Redis, n: int, call: Callable[[Any, int], Any]) -> Callable[[], None]:
    def run() -> None:
        for i in range(n):
            call(r, i)
    return run


def _piped(r: redis.Redis, n: int, call: Callable[[Any, int], Any],
           batch: int = 40) -> Callable[[], None]:
    def run() -> None:
        for i in range(0, n, batch):
            pipe = r.pipeline(transaction=False)
            for j in range(batch):
                call(pipe, i + j)
            pipe.execute()
    return run


def kinds(r: redis.Redis, n: int) -> dict[str, Callable[[], None]]:
    noop = r.script_load("return 1")
    ten = r.script_load("for i = 1, 10 do redis.call('EXPIRE', KEYS[1], 1000) end return 1")
    r.rpush("partial", "run")
    r.xadd("stream", {"e": TEXT})
    return {
        "PING, a round trip each": _single(r, n, lambda c, i: c.ping()),
        "RPUSHX, a round trip each": _single(r, n, lambda c, i: c.rpushx("partial", TEXT)),
        "EVALSHA of an empty script, a round trip each": _single(
            r, n, lambda c, i: c.evalsha(noop, 0)),
        "EVALSHA of ten EXPIREs, a round trip each": _single(
            r, n, lambda c, i: c.evalsha(ten, 1, "stream")),
        "RPUSHX, 40 a pipeline": _piped(r, n, lambda c, i: c.rpushx("partial", TEXT)),
        "EXPIRE, 40 a pipeline": _piped(r, n, lambda c, i: c.expire("stream", 1000)),
        "XADD of 60 bytes, 40 a pipeline": _piped(
            r, n, lambda c, i: c.xadd("stream", {"e": TEXT}, maxlen=2000, approximate=True)),
        "XADD {s, o, e} of 200 bytes, 40 a pipeline": _piped(
            r, n, lambda c, i: c.xadd("delivery", {"s": "session-abcdef", "o": i, "e": TEXT * 3},
                                      maxlen=2000, approximate=True)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="redis-calibrate-") as tmp:
        server = RedisServer(Path(tmp), appendonly=True).start()
        r = redis.Redis.from_url(server.url)
        try:
            best: dict[str, float] = {}
            for rnd in range(a.rounds):
                for name, run in kinds(r, a.calls).items():
                    c0, t0 = _cpu(r), time.perf_counter()
                    run()
                    us = (_cpu(r) - c0) / a.calls * 1e6
                    best[name] = min(us, best.get(name, us))
                    wall = (time.perf_counter() - t0) / a.calls * 1e6
                    print(f"r{rnd} {name:<48} {us:6.1f} µs of redis-server CPU a call"
                          f" (wall {wall:.0f} µs)", flush=True)
            print("lowest:", {k: round(v, 1) for k, v in best.items()})
        finally:
            r.close()
            server.stop()


if __name__ == "__main__":
    main()
