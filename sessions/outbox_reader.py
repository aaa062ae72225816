"""What the webhook dispatcher (sessions/webhooks.py) and the Dapr publisher
(sessions/dapr_publish.py) share: reading outbox shard streams through a consumer group, at
most ``concurrency`` entries in hand at once, taking over entries left pending, and the
bounded logging and retrying around Redis.

Each entry is handed to :meth:`OutboxReader.handle` once per read or takeover (an entry
taken over while this process still handles it is not handed again); what it does with the
entry (XACK it, move it to a retry set, leave it pending) is the subclass's business.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import httpx2
from redis.exceptions import ResponseError

from sessions import keys as K
from sessions.redis_client import REDIS_DOWN, RedisClient

OWNERS_KEPT = 10_000
"""Session owners remembered (the cache is cleared when it grows past this)."""


class OutboxReader:
    """Reads ``streams()`` as consumer group ``group`` and hands each entry to ``handle``."""

    name = "outbox"
    """Names the reader in its log lines."""

    def __init__(self, redis: RedisClient, keys: K.Keys, group: str, concurrency: int,
                 timeout_s: float, log: logging.Logger, *, trust_env: bool = True) -> None:
        self.redis: Any = redis
        self.keys = keys
        self.group = group
        self.concurrency = concurrency
        self.log = log
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{random.randrange(1 << 32):08x}"
        self.stopping = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self.timeout_s = timeout_s
        self._busy: set[bytes] = set()
        """Entry ids this process is handling (at most ``concurrency``)."""
        self._owners: dict[str, str | None] = {}
        self._logged: dict[str, float] = {}
        self.http = httpx2.AsyncClient(timeout=httpx2.Timeout(timeout_s), trust_env=trust_env,
                                       limits=httpx2.Limits(max_connections=concurrency))

    # ------------------------------------------------------------ to fill in

    def streams(self) -> list[str]:
        raise NotImplementedError

    async def handle(self, stream: str, eid: bytes, fields: dict[bytes, bytes]) -> None:
        raise NotImplementedError

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        """The reader's loops: a read and a takeover per stream (subclasses add theirs)."""
        return [f(stream) for stream in self.streams() for f in (self._read, self._reclaim)]

    reclaim_idle_s = 30.0
    """An entry pending this long is taken over (its handler died, or left it to retry)."""
    reclaim_every_s = 5.0
    """Pause between two takeover scans."""

    # ------------------------------------------------------------ running

    async def ensure_groups(self) -> None:
        for stream in self.streams():
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def serve(self, ready: str, target: str) -> None:
        """Make the groups, print the ``ready`` line, run until SIGTERM/SIGINT, then close
        the Redis client (``agentia webhooks``, ``agentia dapr-publish``)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.stopping.set)
        try:
            await self.ensure_groups()
            self.log.info("%s: %d outbox shards -> %s", self.name, len(self.streams()), target)
            print(f"{ready} shards={len(self.streams())}", flush=True)
            await self.run()
        finally:
            await self.redis.aclose()

    async def run(self) -> None:
        """Until ``stopping`` is set; unfinished entries stay pending for the next reader."""
        tasks = [asyncio.create_task(c) for c in self.loops()]
        await self.stopping.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.inflight:
            await asyncio.wait(self.inflight, timeout=self.timeout_s + 1)
        await self.http.aclose()

    def warn(self, kind: str, msg: str, *args: object) -> None:
        """At most one line per kind every 10 s (a receiver down for an hour logs 360)."""
        now = time.monotonic()
        if now - self._logged.get(kind, -1e9) >= 10:
            self._logged[kind] = now
            self.log.warning("%s: " + msg, self.name, *args)

    async def loop(self, step: Callable[[], Awaitable[None]], every: float) -> None:
        """``step`` until stopped, ``every`` seconds apart; Redis outages and refusals are
        logged (bounded) and retried after 1 s, a lost consumer group made again."""
        while not self.stopping.is_set():
            try:
                await step()
            except REDIS_DOWN as exc:
                self.warn("redis", "Redis unavailable (%s): retrying", exc)
                await asyncio.sleep(1)
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted empty: the groups again
                    self.warn("nogroup", "consumer group gone: created again")
                    with contextlib.suppress(*REDIS_DOWN, ResponseError):
                        await self.ensure_groups()
                else:
                    self.warn("error", "Redis refused a command: %s", exc)
                await asyncio.sleep(1)
                continue
            await asyncio.sleep(every)

    async def _read(self, stream: str) -> None:
        async def step() -> None:
            room = self.concurrency - len(self.inflight)
            if room <= 0:
                await asyncio.sleep(0.05)
                return
            got = await self.redis.xreadgroup(self.group, self.consumer, {stream: ">"},
                                              count=min(room, 100), block=1000)
            for _, rows in got or ():
                for eid, fields in rows:
                    self._spawn(stream, eid, fields)
        await self.loop(step, 0)

    async def _reclaim(self, stream: str) -> None:
        """Entries pending longer than ``reclaim_idle_s`` (XAUTOCLAIM)."""
        idle_ms = int(self.reclaim_idle_s * 1000)

        async def step() -> None:
            start = "0-0"
            while len(self.inflight) < self.concurrency:
                res = await self.redis.xautoclaim(stream, self.group, self.consumer, idle_ms,
                                                  start, count=50)
                start, rows = res[0], res[1]
                for eid, fields in rows:
                    if fields:  # None: deleted or trimmed meanwhile
                        self._spawn(stream, eid, fields)
                if start in (b"0-0", "0-0"):
                    return
        await self.loop(step, self.reclaim_every_s)

    def _spawn(self, stream: str, eid: bytes, fields: dict[bytes, bytes]) -> None:
        if eid in self._busy:  # taken over while its own handling still runs (a slow one)
            return
        self._busy.add(eid)
        task = asyncio.create_task(self.handle(stream, eid, fields))
        self.inflight.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.inflight.discard(t)
            self._busy.discard(eid)
        task.add_done_callback(done)

    async def owner(self, sid: str) -> str | None:
        """The session's owner (cached; None when the session is gone)."""
        if sid not in self._owners:
            if len(self._owners) > OWNERS_KEPT:
                self._owners.clear()
            raw = await self.redis.hget(self.keys.meta(sid), "owner")
            self._owners[sid] = None if raw is None else raw.decode()
        return self._owners[sid]
