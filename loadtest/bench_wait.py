"""What ``AGENTIA_REDIS_WAIT_REPLICAS=1`` costs: submit and append latency on a real local
Redis Cluster (3 masters, 1 replica each, loopback), with and without WAIT.

    .venv/bin/python -m loadtest.bench_wait [--ops 2000]

Sequential calls (one in flight), so the figures are per-operation latency, not throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from launch.redis_server import RedisClusterServer
from sessions.bus import Bus, connect


def _pcts(samples: list[float]) -> dict[str, float]:
    q = statistics.quantiles(samples, n=100)
    return {"p50_ms": round(q[49] * 1000, 3), "p99_ms": round(q[98] * 1000, 3),
            "mean_ms": round(statistics.fmean(samples) * 1000, 3)}


async def measure(url: str, wait: int, ops: int, run: int) -> dict[str, dict[str, float]]:
    bus = Bus(connect(url), prefix=f"bw{run}", shards=8, wait_replicas=wait, wait_ms=1000)
    try:
        sub, app = [], []
        for i in range(ops):
            sid = f"bench-{i // 50}"  # a session holds at most 100 pending turns
            if i % 50 == 0:
                await bus.open_session(sid, "alice", "n1")
            t = time.perf_counter()
            await bus.submit(sid, f"c{i}", "hello", user="alice")
            sub.append(time.perf_counter() - t)
            t = time.perf_counter()
            await bus.append(sid, {"type": "delta", "turn": i, "text": "x" * 40})
            app.append(time.perf_counter() - t)
        return {"submit": _pcts(sub[ops // 10:]), "append": _pcts(app[ops // 10:])}
    finally:
        await bus.close()


async def main(ops: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server = RedisClusterServer(Path(tmp)).start()
        try:
            out: dict[str, list[dict[str, dict[str, float]]]] = {}
            for run, wait in enumerate((0, 1, 0, 1)):  # interleaved against drift
                out.setdefault(f"wait_replicas={wait}", []).append(
                    await measure(server.url, wait, ops, run))
            print(json.dumps(out, indent=1))
        finally:
            server.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=2000)
    asyncio.run(main(ap.parse_args().ops))
