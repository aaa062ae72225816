"""When a worker is ready (``/readyz`` on ``AGENTIA_WORKER_INTERNAL_PORT``, agentia/probes.py).

Not ready (503, one line per reason): shutting down, an MCP server of its agents is down
(named, with the last error), Redis does not answer a PING within a second. A probe every
few seconds costs one PING.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from agentia.probes import Readiness
from sessions.mcp import McpPool

REDIS_PING_TIMEOUT_S = 1.0


class Pingable(Protocol):
    async def ping(self) -> Any: ...


def worker_readiness(pool: McpPool, redis: Pingable, stopping: asyncio.Event) -> Readiness:
    async def ready() -> tuple[int, str]:
        problems = ["stopping"] if stopping.is_set() else []
        problems += [f"mcp server down: {name} ({pool.servers[name].error or 'connecting'})"
                     for name in pool.dead()]
        try:
            async with asyncio.timeout(REDIS_PING_TIMEOUT_S):
                await redis.ping()
        except Exception:
            problems.append("redis unreachable")
        if problems:
            return 503, "".join(f"{p}\n" for p in problems)
        return 200, "ready\n"
    return ready
