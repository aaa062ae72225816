"""The agent worker times its garbage collections into ``agentia_gc_pause_seconds`` on its
/metrics, as the edge does (agentia/collector.py)."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request

from launch.redis_server import RedisServer
from tests.conftest import Cluster

COUNT = re.compile(rb'^agentia_gc_pause_seconds_count\{generation="(\d)"\} (\S+)$', re.M)


def collections(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read()
    return {g.decode(): float(n) for g, n in COUNT.findall(body)}


async def test_the_worker_reports_its_collections(redis_server: RedisServer,
                                                  prefix: str) -> None:
    c = Cluster(redis_server.url, prefix)
    try:
        # young collections every 100 net allocations: an idle worker's loops make some
        w = c.worker(AGENTIA_WORKER_INTERNAL_PORT="0", AGENTIA_WORKER_GC_GEN0_THRESHOLD="100")
        deadline, seen = time.monotonic() + 20, {}
        while time.monotonic() < deadline and not seen.get("0"):
            await asyncio.sleep(0.5)  # the timer moves its pauses into the histogram each second
            seen = await asyncio.to_thread(collections, w.internal_port)
        assert seen.get("0", 0) > 0, seen
    finally:
        c.stop()
