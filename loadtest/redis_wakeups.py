"""What one wake-up of an otherwise idle redis-server costs it, at the turn path's pace (issue 13,
session 17; docs/architecture.md, "Where redis-server's CPU goes per turn").

``loadtest/redis_calibrate.py`` sends its calls back to back: redis-server never sleeps, and a
round trip costs it ~26 µs. In the turn path it is ~1 % busy: it sleeps in ``epoll_wait``
between the worker's ticks, the submits and the edge's reads, and each request wakes it up.
Here a fresh redis-server (AOF everysec as in production, then the same without AOF) first
idles ``--seconds`` (serverCron alone), then gets one request of each kind every 1/``--rate``
seconds for ``--seconds``; its CPU (INFO cpu) less the idle rate, over the requests:

* ``PING``: a wake-up, a read and a reply, nothing for the AOF;
* ``RPUSHX``: the same with a write (the AOF ``write()`` of that loop);
* ``RPUSHX`` x 40 in one pipeline: a tick's worth of commands in one wake-up;
* ``XADD`` of ~2.4 KB (40 pieces of ~60 bytes, a 40-session tick's entry) that a client
  blocked in ``XREAD`` gets: the worker's tick and the edge's read it wakes (one read, two
  replies; the reader asks again at once, one more read: the edge asks ahead, 1 in 13);
* a tick as the worker sent it until session 19: 4 ``RPUSHX`` (the partial buffer's pieces,
  ~1 in 10 of a tick's 40) and that ``XADD`` in one pipeline, the reader blocked;
* the same writes as one script kept out of the AOF and the replicas (``redis.set_repl(
  redis.REPL_NONE)``, ``TICK``): tried in session 19 and not kept, the script costs a woken
  redis-server about what the AOF's ``write()`` it saves does (docs/benchmarks.md, session 19).

    python -m loadtest.redis_wakeups --seconds 8 --rate 25 --record redis-wakeups-redis17
    python -m loadtest.redis_wakeups --seconds 6 --rate 25 --dir /dev/shm  # the AOF on tmpfs
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from launch.redis_server import RedisServer
from loadtest.record import record

PIECE = "x" * 60
TICK = """
redis.replicate_commands()
redis.set_repl(redis.REPL_NONE)
for i = 2, 5 do redis.call('RPUSHX', KEYS[1], ARGV[i]) end
return redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, 6))
"""
"""A tick's writes (4 partial pieces, the 40-piece entry) not propagated: neither the AOF nor
the replicas get them."""


def _cpu(r: redis.Redis) -> float:
    info = r.info("cpu")
    return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])


def _paced(r: redis.Redis, rate: float, seconds: float, call: Callable[[], Any]) -> tuple[
        float, int]:
    """redis-server CPU-s and calls of ``call`` every 1/``rate`` s for ``seconds``."""
    c0, n, t0 = _cpu(r), 0, time.perf_counter()
    while time.perf_counter() < t0 + seconds:
        call()
        n += 1
        time.sleep(max(0.0, t0 + n / rate - time.perf_counter()))
    return _cpu(r) - c0, n


class _Reader(threading.Thread):
    """A client blocked in XREAD on ``stream``, asking again as soon as it is answered."""

    def __init__(self, url: str, stream: str) -> None:
        super().__init__(daemon=True)
        self.r, self.stream, self.stop = redis.Redis.from_url(url), stream, threading.Event()
        self.got = 0

    def run(self) -> None:
        last = "$"
        while not self.stop.is_set():
            rows: Any = self.r.xread({self.stream: last}, block=200, count=100)
            for _, entries in rows or ():
                last = entries[-1][0]
                self.got += len(entries)


def kinds(r: redis.Redis) -> dict[str, Callable[[], Any]]:
    r.rpush("partial", "run")

    def pipeline_40() -> None:
        pipe = r.pipeline(transaction=False)
        for _ in range(40):
            pipe.rpushx("partial", PIECE)
        pipe.ltrim("partial", 0, 99)
        pipe.execute()

    fields = {f"s{i}": PIECE for i in range(40)}

    def tick(script: bool) -> Callable[[], Any]:
        def send() -> None:  # no trim: a trim would be written to the AOF
            if script:
                r.eval(TICK, 2, "partial", "out", 1000, *[PIECE] * 4,
                       *[x for kv in fields.items() for x in kv])
                return
            pipe = r.pipeline(transaction=False)
            for _ in range(4):
                pipe.rpushx("partial", PIECE)
            pipe.xadd("out", fields, maxlen=1000, approximate=True)  # type: ignore[arg-type]
            pipe.execute()
        return send

    return {"PING": r.ping, "RPUSHX": lambda: r.rpushx("partial", PIECE),
            "RPUSHX x 40, one pipeline": pipeline_40,
            "XADD of 40 pieces, a reader blocked in XREAD": lambda: r.xadd(
                "out", fields, maxlen=1000, approximate=True),  # type: ignore[arg-type]
            "a tick as commands: 4 RPUSHX + that XADD": tick(script=False),
            "a tick as the unpropagated script": tick(script=True)}


def one_server(aof: bool, rate: float, seconds: float, where: str | None = None) -> dict[
        str, Any]:
    with tempfile.TemporaryDirectory(prefix="redis-wakeups-", dir=where) as tmp:
        server = RedisServer(Path(tmp), appendonly=aof).start()
        r = redis.Redis.from_url(server.url)
        reader = _Reader(server.url, "out")
        try:
            time.sleep(1.0)
            c0, t0 = _cpu(r), time.perf_counter()
            time.sleep(seconds)
            idle = (_cpu(r) - c0) / (time.perf_counter() - t0)
            out: dict[str, Any] = {"appendonly": aof, "dir": tmp,
                                   "idle_ms_per_s": round(idle * 1e3, 3)}
            for name, call in kinds(r).items():
                if not reader.is_alive() and name.startswith(("XADD", "a tick")):
                    reader.start()
                    time.sleep(0.3)
                used, n = _paced(r, rate, seconds, call)
                out[name] = round((used - idle * seconds) / n * 1e6, 1)
                print(f"aof={aof} {name:<45} {out[name]:7.1f} µs of redis-server CPU a "
                      f"wake-up ({n} at {rate}/s; idle {idle * 1e3:.2f} ms/s)", flush=True)
            return out
        finally:
            reader.stop.set()
            if reader.is_alive():
                reader.join(2)
            reader.r.close()
            r.close()
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=float, default=25.0, help="wake-ups a second (25: a tick "
                    "every 40 ms)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", help="where the data directory (the AOF) goes, e.g. /dev/shm "
                    "(tmpfs): what the filesystem's write() costs (default: the temp dir)")
    ap.add_argument("--record", metavar="NAME", help="write loadtest/results/<NAME>.json")
    a = ap.parse_args()
    if not (0 < a.seconds <= 60 and 0 < a.rate <= 1000 and 1 <= a.rounds <= 4):
        ap.error("--seconds 0-60, --rate 0-1000, --rounds 1-4")
    runs = [one_server(aof, a.rate, a.seconds, a.dir) | {"round": rnd}
            for rnd in range(a.rounds) for aof in (True, False)]
    if a.record:
        print("recorded", record(a.record, {"runs": runs, "rate": a.rate,
                                            "seconds": a.seconds, "dir": a.dir}))


if __name__ == "__main__":
    main()
