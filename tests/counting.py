"""What tests count: the tasks created on the running loop, and redis-py's own client as the
control of the bus client's (sessions/redis_client.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis


class TaskCount:
    """Tasks created on the running loop while inside (a counting task factory); with
    ``where``, only those whose coroutine it accepts."""

    def __init__(self, where: Callable[[Any], bool] | None = None) -> None:
        self.where = where
        self.made = 0

    def __enter__(self) -> TaskCount:
        self.made = 0
        self.loop = asyncio.get_running_loop()
        self.before = self.loop.get_task_factory()

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kw: Any) -> Any:
            if self.where is None or self.where(coro):
                self.made += 1
            return asyncio.Task(coro, loop=loop, **kw)
        self.loop.set_task_factory(factory)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.set_task_factory(self.before)


def stock(url: str) -> aioredis.Redis:
    """redis-py's own client as sessions/redis_client.py configured it before QuickPool."""
    return aioredis.Redis(connection_pool=aioredis.BlockingConnectionPool.from_url(
        url, max_connections=64, timeout=5, socket_timeout=10, health_check_interval=10))
