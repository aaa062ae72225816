"""``bench_core turns`` and ``cancel``: a steady rate of chat turns through edge -> Redis ->
worker -> edge with the demo model (ack, first-delta and full-turn latency, CPU per turn of each
process), and a running turn's cancel latency (the figures: loadtest/bench_core.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import websockets

from agentia.settings import DEV_SECRET
from agentia.supervise import stop_all
from gateway.auth import mint
from launch.redis_server import RedisServer
from loadtest.proc_stats import NO_USER_LIMITS, cpu_s, pct, spawn


async def _turn_load(port: int, rate: float, seconds: float, clients: int,
                     words: int = 1, probe: Any = None) -> dict[str, Any]:
    """``probe()`` (CPU-seconds by process group) is read once the connections are open and
    again once every reply is in, so that handshakes and closes are not charged to turns."""
    token = mint(DEV_SECRET, "bench-turns", 3600)
    acks: list[float] = []
    firsts: list[float] = []
    fulls: list[float] = []
    conns = []
    for i in range(clients):
        ws = await websockets.connect(f"ws://127.0.0.1:{port}/v1/ws?session=turns-{i}",
                                      additional_headers={"Authorization": f"Bearer {token}"},
                                      compression=None, ping_interval=None)
        await ws.recv()
        conns.append(ws)
    sent: dict[str, float] = {}
    turn_of: dict[int, str] = {}
    first_seen: set[str] = set()
    done = 0
    deltas, said = [0], [0]
    total: list[int] = []  # set once sending is over
    all_done = asyncio.Event()

    async def reader(ws: Any) -> None:
        nonlocal done
        async for raw in ws:
            f = orjson.loads(raw)
            now = time.perf_counter()
            if f["type"] == "ack":
                acks.append(now - sent[f["id"]])
                turn_of[id(ws) * 1_000_000 + f["offset"]] = f["id"]
            elif f["type"] in ("chunk", "reply"):
                cid = turn_of.get(id(ws) * 1_000_000 + f["turn"])
                deltas[0] += f["type"] == "chunk"  # reply text frames (the log's deltas before)
                if cid and cid not in first_seen:
                    first_seen.add(cid)
                    firsts.append(now - sent[cid])
                if cid and f["type"] == "reply":
                    fulls.append(now - sent[cid])
                    said[0] += len(f["text"].split())
                    done += 1
                    if total and done >= total[0]:
                        all_done.set()

    readers = [asyncio.create_task(reader(ws)) for ws in conns]
    cpu0 = probe() if probe else {}
    interval, n, t0 = 1.0 / rate, 0, time.perf_counter()
    run = os.urandom(4).hex()  # client ids must be new in every run, or they are duplicates
    text = " ".join(["hello"] * words)  # the demo model's reply quotes it: longer replies
    while time.perf_counter() - t0 < seconds:
        target = t0 + n * interval
        await asyncio.sleep(max(0.0, target - time.perf_counter()))
        cid = f"{run}-{n}"
        sent[cid] = time.perf_counter()
        await conns[n % clients].send(orjson.dumps({"type": "send", "id": cid,
                                                   "text": text}).decode())
        n += 1
    total.append(n)
    if done >= n:
        all_done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), 30)
    window = time.perf_counter() - t0
    cpu1 = probe() if probe else {}
    for r in readers:
        r.cancel()
    for ws in conns:
        await ws.close()
    ms = 1000
    return {"rate": rate, "sent": n, "completed": done, "achieved_rate": round(
        n / seconds, 1),
        "ack_p50_ms": round(pct(acks, 50) * ms, 2), "ack_p99_ms": round(pct(acks, 99) * ms, 2),
        "first_delta_p50_ms": round(pct(firsts, 50) * ms, 2),
        "first_delta_p99_ms": round(pct(firsts, 99) * ms, 2),
        "full_turn_p50_ms": round(pct(fulls, 50) * ms, 2),
        "full_turn_p99_ms": round(pct(fulls, 99) * ms, 2),
        "full_turn_mean_ms": round(statistics.fmean(fulls) * ms, 2) if fulls else None,
        "deltas_per_turn": round(deltas[0] / done, 2) if done else None,
        "reply_words_per_turn": round(said[0] / done, 2) if done else None,
        "window_s": round(window, 2), "_cpu": {k: cpu1[k] - cpu0[k] for k in cpu0}}


def bench_turns(rates: list[float], seconds: float, clients: int, workers: int,
                word_delay: float = 0.0, words: int = 1) -> list[Any]:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), appendonly=True).start()
        env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
               "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "warning",
               "AGENTIA_DEMO_WORD_DELAY": str(word_delay), "AGENTIA_RATE_PER_S": "1000",
               "AGENTIA_BURST": "1000", "AGENTIA_CONCURRENCY": "256",
               "AGENTIA_MAX_CONNECTIONS_PER_USER": str(clients),
               **NO_USER_LIMITS}
        env.pop("OPENAI_API_KEY", None)
        edge, info = spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY")
        ws = [spawn(["worker"], env, "AGENTIA_WORKER_READY")[0] for _ in range(workers)]
        assert redis.proc is not None
        pids = {"edge": [edge.pid], "workers": [w.pid for w in ws], "redis": [redis.proc.pid]}
        out = []

        def probe() -> dict[str, float]:
            return {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}

        try:
            # what the processes burn with nothing to do (polling, heartbeats), subtracted
            # from each level so that a slow level is not charged more per turn for idling
            c0 = probe()
            time.sleep(5)
            idle = {k: (v - c0[k]) / 5 for k, v in probe().items()}
            for r in rates:
                level = asyncio.run(_turn_load(int(info["port"]), r, seconds, clients, words,
                                               probe))
                for k, used in level.pop("_cpu").items():
                    net = used - idle[k] * level["window_s"]
                    level[f"{k}_cpu_s_per_turn"] = round(net / max(1, level["completed"]), 5)
                    level[f"{k}_idle_cores"] = round(idle[k], 4)
                out.append(level)
                print(orjson.dumps(out[-1]).decode(), file=sys.stderr, flush=True)
            return out
        finally:
            stop_all([edge, *ws])
            redis.stop()


# ------------------------------------------------------------------ cancel


async def _cancel_trials(port: int, trials: int) -> dict[str, Any]:
    token = mint(DEV_SECRET, "bench-cancel", 3600)
    lat: list[float] = []
    async with websockets.connect(f"ws://127.0.0.1:{port}/v1/ws?session=cancel-bench",
                                  additional_headers={"Authorization": f"Bearer {token}"},
                                  compression=None) as ws:
        await ws.recv()
        for n in range(trials):
            await ws.send(orjson.dumps({"type": "send", "id": f"{os.urandom(4).hex()}-{n}",
                                        "text": "a long reply " * 5}).decode())
            turn = None
            while True:
                f = orjson.loads(await ws.recv())
                if f["type"] == "ack":
                    turn = f["offset"]
                elif f["type"] == "chunk" and f["turn"] == turn:
                    t0 = time.perf_counter()
                    await ws.send(orjson.dumps({"type": "cancel", "turn": turn}).decode())
                elif f["type"] == "cancelled" and f["turn"] == turn:
                    lat.append(time.perf_counter() - t0)
                    break
    return {"trials": trials, "cancel_to_cancelled_p50_ms": round(pct(lat, 50) * 1000, 1),
            "p99_ms": round(pct(lat, 99) * 1000, 1), "max_ms": round(max(lat) * 1000, 1)}


def bench_cancel(trials: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp), appendonly=True).start()
        env = {**os.environ, "AGENTIA_DEV": "true",  # local: the public dev secret
               "AGENTIA_REDIS_URL": redis.url, "AGENTIA_LOG_LEVEL": "warning",
               "AGENTIA_DEMO_WORD_DELAY": "0.2", "AGENTIA_RATE_PER_S": "100",
               **NO_USER_LIMITS}
        env.pop("OPENAI_API_KEY", None)
        edge, info = spawn(["gateway", "--port", "0"], env, "AGENTIA_EDGE_READY")
        worker = spawn(["worker"], env, "AGENTIA_WORKER_READY")[0]
        try:
            return asyncio.run(_cancel_trials(int(info["port"]), trials))
        finally:
            stop_all([edge, worker])
            redis.stop()


def turns_summary(levels: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """CPU per turn averaged over the levels the workers kept up with; the highest such rate.

    The CPU counted for a level includes its ramp-down (waiting for the last replies), so a
    kept-up level's figure is what a turn costs, not what an overloaded system spends."""
    ok = [lv for lv in levels
          if lv["completed"] == lv["sent"] and lv["first_delta_p50_ms"] < 1000]
    out: dict[str, Any] = {"workers": workers, "levels_kept_up": [lv["rate"] for lv in ok],
                           "max_rate_kept_up": max((lv["rate"] for lv in ok), default=None)}
    for k in ("edge", "workers", "redis"):
        vals = [lv[f"{k}_cpu_s_per_turn"] for lv in ok]
        out[f"{k}_cpu_s_per_turn"] = round(statistics.fmean(vals), 5) if vals else None
    for k in ("deltas_per_turn", "reply_words_per_turn"):
        d = [lv[k] for lv in ok if lv.get(k) is not None]
        out[k] = round(statistics.fmean(d), 2) if d else None
    return out

