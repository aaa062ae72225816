"""One turn's Redis commands, exactly (issue 13, session 15): MONITOR on a private
redis-server (AOF on, as in production) while one session with one node runs a short turn
(the demo reply, ~27 words) and a long one (~300 words) through the real worker (demo model,
``--word-delay`` s a word, the worker's 40 ms coalescing) and a delivery reader in this
process (the edge's reads, asked for ahead). For each command: the calls, the key (session id,
prefix, node and shard made generic), who ran it (a script's inner call or a client's own) and
the bytes of its arguments, per turn; the long turn less the short one, over the extra pieces,
is what each piece costs. The submit is the bus's, as the edge's.

    python -m loadtest.turn_inventory [--json out.json]

The tables in docs/architecture.md ("One turn's commands, counted") come from it.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import orjson
from agents import Agent

from launch.redis_server import RedisServer
from loadtest.bench_turnpath import VOCAB
from sessions.bus import Bus, connect
from sessions.demo import DemoModel
from sessions.runtime import ModelConfig, model_provider
from sessions.worker import Worker, WorkerConfig

SKIP = {"MONITOR", "INFO", "PING", "HELLO", "CLIENT", "SCRIPT", "ZADD_ALIVE"}
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def generic(key: str, sid: str) -> str:
    """The key with its prefix, session, node and shard tags made generic."""
    key = re.sub(r"^inv[0-9a-f]+:", "<p>:", key)
    key = key.replace("{" + sid + "}", "{<sid>}")
    key = re.sub(r"\{node\.[^}]+\}", "{node}", key)
    return re.sub(r"\{in\.[^}]+\}", "{in.k}", key)


def parse(line: bytes) -> tuple[str, list[bytes]] | None:
    """``(source, args)`` of one MONITOR line: source ``lua`` for a script's inner call."""
    head, _, rest = line.partition(b"] ")
    args = [bytes(a).decode("unicode_escape").encode("latin-1") for a in _ARG.findall(rest)]
    if not args:
        return None
    return ("lua" if b"lua" in head else "client"), args


async def one_turn(bus: Bus, sid: str, text: str, word_delay: float) -> int:
    """Run one turn of ``sid`` (its node ``n1`` read as an edge reads it); reply pieces."""
    worker = Worker(bus, Agent(name="inv", model=DemoModel(word_delay=word_delay)),
                    model_provider(ModelConfig(demo_word_delay=word_delay)),
                    WorkerConfig(block_ms=20, coalesce_ms=40))
    pieces = 0
    done = asyncio.Event()

    async def read() -> None:
        nonlocal pieces
        last = b"$"
        while not done.is_set():
            for d in await bus.read_delivery("n1", last, 200):
                last = d.id
                pieces += d.chunk is not None and d.session == sid
                if d.chunk is None and b'"reply"' in d.event:
                    done.set()

    reader = asyncio.create_task(read())
    await asyncio.sleep(0.3)
    await bus.submit(sid, f"m{time.monotonic_ns()}", text, user="ann")
    await asyncio.wait_for(worker.run(burst=True), 60)
    await asyncio.wait_for(done.wait(), 10)
    reader.cancel()
    if worker.chunks._ticker is not None:
        worker.chunks._ticker.cancel()
    return pieces


async def capture(url: str, out: list[bytes], stop: asyncio.Event) -> None:
    r, w = await asyncio.open_connection(*url.removeprefix("redis://").split("/")[0].split(":"))
    w.write(b"MONITOR\r\n")
    await r.readline()
    while not stop.is_set():
        try:
            line = await asyncio.wait_for(r.readline(), 0.2)
        except TimeoutError:
            continue
        out.append(line.rstrip(b"\r\n"))
    w.close()


def table(lines: list[bytes], sid: str) -> dict[str, dict[str, float]]:
    """Per (command, key, source): calls and argument bytes."""
    rows: dict[str, dict[str, float]] = defaultdict(lambda: {"calls": 0, "bytes": 0})
    for line in lines:
        got = parse(line.removeprefix(b"+"))
        if got is None:
            continue
        source, args = got
        name = args[0].decode().upper()
        if name in SKIP:
            continue
        key = generic(args[1].decode("latin-1"), sid) if len(args) > 1 else ""
        if name in ("EVALSHA", "EVAL"):
            key = generic(args[3].decode("latin-1"), sid) if len(args) > 3 else ""
        if name in ("XREADGROUP", "XREAD") and b"STREAMS" in args:
            key = generic(args[args.index(b"STREAMS") + 1].decode("latin-1"), sid)
        if name in ("XREADGROUP", "XREAD") and b"STREAMS" in args:
            key = generic(args[args.index(b"STREAMS") + 1].decode("latin-1"), sid)
        if sid not in args[1:4].__repr__() and "node" not in key and "{in" not in key:
            continue  # another session's, or housekeeping
        row = rows[f"{name} {key} ({source})"]
        row["calls"] += 1
        row["bytes"] += sum(len(a) for a in args)
    return dict(rows)


async def main(a: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            bus = Bus(connect(server.url), prefix=f"inv{time.time_ns() % 10**6:x}", shards=4)
            await bus.ensure_groups()
            await bus.heartbeat_node("n1")
            long_text = " ".join(VOCAB[i % len(VOCAB)] for i in range(a.long_words - 25))
            result: dict[str, Any] = {}
            for name, text in (("short", "hello there"), ("long", long_text)):
                sid = f"inv-{name}"
                await bus.open_session(sid, "ann", "n1")
                await one_turn(bus, sid, "warm up", a.word_delay)  # scripts loaded, memory
                lines: list[bytes] = []
                stop = asyncio.Event()
                cap = asyncio.create_task(capture(server.url, lines, stop))
                await asyncio.sleep(0.2)
                pieces = await one_turn(bus, sid, text, a.word_delay)
                await asyncio.sleep(0.3)
                stop.set()
                await cap
                result[name] = {"pieces": pieces, "rows": table(lines, sid)}
            await bus.close()
        finally:
            server.stop()
    return result


def report(res: dict[str, Any]) -> None:
    short, long_ = res["short"], res["long"]
    extra = max(1, long_["pieces"] - short["pieces"])
    print(f"pieces: short {short['pieces']}, long {long_['pieces']}")
    keys = sorted(set(short["rows"]) | set(long_["rows"]))
    print(f"{'command key (source)':58} {'short':>6} {'long':>6} {'/piece':>7} "
          f"{'B short':>8} {'B long':>8}")
    tot: Counter[str] = Counter()
    for k in keys:
        s = short["rows"].get(k, {"calls": 0, "bytes": 0})
        lg = long_["rows"].get(k, {"calls": 0, "bytes": 0})
        per = (lg["calls"] - s["calls"]) / extra
        print(f"{k:58} {s['calls']:6.0f} {lg['calls']:6.0f} {per:7.2f} "
              f"{s['bytes']:8.0f} {lg['bytes']:8.0f}")
        tot.update({"s": s["calls"], "l": lg["calls"], "sb": s["bytes"], "lb": lg["bytes"]})
    print(f"{'total':58} {tot['s']:6.0f} {tot['l']:6.0f} "
          f"{(tot['l'] - tot['s']) / extra:7.2f} {tot['sb']:8.0f} {tot['lb']:8.0f}")


def cli() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--long-words", type=int, default=300)
    p.add_argument("--word-delay", type=float, default=0.02)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args()
    res = asyncio.run(main(a))
    report(res)
    if a.json:
        a.json.write_bytes(orjson.dumps(res, option=orjson.OPT_INDENT_2))


if __name__ == "__main__":
    cli()
