"""The bus client's reply reads under one shared deadline timer (sessions/redis_client.py
``QuickWrite.read_response``, issue 13 session 19): no timer per reply, and a read that waits
past ``socket_timeout`` still fails as redis-py's did (the connection dropped), a cancelled
one is still cancelled."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from redis.exceptions import TimeoutError as RedisTimeoutError

from launch.redis_server import RedisServer
from sessions.read_deadlines import TICK
from sessions.redis_client import QuickPool, connect
from tests.counting import stock


class Timers:
    """Timers started on the running loop while inside (``loop.call_at``, which
    ``call_later`` and ``asyncio.timeout`` use)."""

    def __enter__(self) -> Timers:
        self.made = 0
        self.loop: Any = asyncio.get_running_loop()
        self.call_at = self.loop.call_at

        def counted(*args: Any, **kw: Any) -> Any:
            self.made += 1
            return self.call_at(*args, **kw)
        setattr(self.loop, "call_at", counted)  # noqa: B010 (an instance attribute over the method)
        return self

    def __exit__(self, *exc: object) -> None:
        del self.loop.call_at


def empty_list() -> str:
    """A key no test pushed to: BLPOP on it waits its whole timeout (the suite's Redis is
    shared: test_quick_pool.py leaves an item in its own ``nothing-here``)."""
    return f"nothing-here-{uuid.uuid4().hex}"


def quick_pool(r: Any, socket_timeout: float) -> QuickPool:
    pool = r.connection_pool
    assert isinstance(pool, QuickPool)
    pool.connection_kwargs["socket_timeout"] = socket_timeout
    return pool


async def test_replies_start_no_timer_each(redis_server: RedisServer) -> None:
    """redis-py times every reply with ``asyncio.timeout`` (a timer each; its own client is
    the control); the quick connections' replies share one timer looked at every TICK."""
    made = {}
    clients: list[tuple[str, Any]] = [("stock", stock(redis_server.url)),
                                      ("quick", connect(redis_server.url))]
    for name, r in clients:
        try:
            await r.set("k", 0)  # the connection is made outside the count
            with Timers() as timers:
                for i in range(100):
                    await r.set("k", i)
                async with r.pipeline(transaction=False) as pipe:
                    for _ in range(10):
                        pipe.get("k")
                    assert await pipe.execute() == [b"99"] * 10
            made[name] = timers.made
        finally:
            await r.aclose()
            await r.connection_pool.disconnect()
    assert made["stock"] >= 110, made
    assert made["quick"] <= 1, made  # the shared look, armed once while a read waits


async def test_a_read_past_its_timeout_fails_and_drops_the_connection(
        redis_server: RedisServer) -> None:
    r = connect(redis_server.url)
    try:
        pool = quick_pool(r, 0.3)
        conn: Any = await pool.get_connection()
        await conn.send_command("BLPOP", empty_list(), 3)  # Redis answers after 3 s
        began = time.monotonic()
        with pytest.raises(RedisTimeoutError):
            await conn.read_response()
        took = time.monotonic() - began
        assert 0.3 <= took <= 0.3 + TICK + 0.5, took
        assert not conn.is_connected  # dropped: its late reply can answer nothing else
        assert conn not in pool.deadlines.waiting
        await pool.release(conn)
        assert await r.set("k", "v") and await r.get("k") == b"v"  # a fresh connection
    finally:
        await r.aclose()
        await pool.disconnect()


async def test_a_reply_within_its_timeout_is_read(redis_server: RedisServer) -> None:
    """A read that waits most of its timeout and gets its reply is not failed, nor is the
    connection's next read (the look after it finds nothing waiting)."""
    r = connect(redis_server.url)
    try:
        pool = quick_pool(r, 1.0)
        assert await r.blpop([empty_list()], 0.6) is None  # waits 0.6 s of its 1 s
        await asyncio.sleep(TICK * 2)  # the shared look comes, finds no read waiting
        assert await r.set("k", "v") and await r.get("k") == b"v"
        assert not pool.deadlines.waiting
    finally:
        await r.aclose()
        await pool.disconnect()


async def test_a_cancelled_read_is_cancelled(redis_server: RedisServer) -> None:
    r = connect(redis_server.url)
    try:
        pool = quick_pool(r, 10)
        task = asyncio.ensure_future(r.execute_command("BLPOP", empty_list(), 5))
        await asyncio.sleep(0.2)
        assert len(pool.deadlines.waiting) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not pool.deadlines.waiting
        assert await r.set("k", "v") and await r.get("k") == b"v"
    finally:
        await r.aclose()
        await pool.disconnect()
