"""The Dapr publisher (``agentia dapr-publish``; docs/dapr.md "Session events to a topic").

Appends copy the events of ``AGENTIA_DAPR_EVENTS`` into the Dapr outbox shard streams
(sessions/delivery_redis.py, in the fan-out's pipeline, beside the webhook outbox). Each
publisher reads every shard through the consumer group :data:`~sessions.keys.DAPR_GROUP`
(several publishers share the work) and publishes one CloudEvent per event through the
sidecar (``POST /v1.0/publish/<pubsub>/<topic>``, ``application/cloudevents+json``), at most
``dapr_concurrency`` at once:

* 2xx: published (XACK + XDEL).
* anything else (Dapr's 403/404/500, a refused connection, a timeout): the entry stays
  pending and is taken again (XAUTOCLAIM) once idle ``dapr_retry_s``, for as long as it is in
  the stream (trimmed at ``OUTBOX_MAXLEN``). A publisher that dies mid-call: the same.

So every event is published at least once; its CloudEvent ``id`` (``<session>:<offset>``) lets
a subscriber drop the duplicates. No dead letters here: a sidecar that refuses is retried
until it accepts (Dapr's own resiliency policies and dead-letter topics apply after that).
Chat turns never wait on this: the appends only XADD to Redis.
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
from datetime import UTC, datetime
from typing import Any

import httpx2
import orjson
from redis.exceptions import ResponseError

from agentia import metrics as M
from agentia.settings import DaprPublishSettings
from sessions import keys as K
from sessions.redis_client import REDIS_DOWN, RedisClient, connect

log = logging.getLogger("agentia.dapr")

# KEYS: outbox; ARGV: entry id. Published: 1, or 0 when it was no longer pending.
DONE = """
local acked = redis.call('XACK', KEYS[1], '""" + K.DAPR_GROUP + """', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return acked
"""


def cloudevent(source: str, sid: str, user: str | None, offset: int, event: bytes,
               queued_ms: int | None = None) -> bytes:
    """The CloudEvent (JSON format, spec 1.0) of one session event: ``id`` is
    ``<session>:<offset>`` (the same on every retry), ``type`` ``agentia.event.<type>``,
    ``subject`` the session, ``data`` ``{session, user, offset, event}`` as a webhook's body."""
    kind = orjson.loads(event).get("type", "unknown")
    at = datetime.now(UTC) if queued_ms is None else datetime.fromtimestamp(queued_ms / 1000, UTC)
    return orjson.dumps({
        "specversion": "1.0", "id": f"{sid}:{offset}", "source": source,
        "type": f"agentia.event.{kind}", "subject": sid,
        "time": at.isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": {"session": sid, "user": user, "offset": offset,
                 "event": orjson.Fragment(event)}})


class Publisher:
    def __init__(self, s: DaprPublishSettings, redis: RedisClient) -> None:
        self.s = s
        self.redis: Any = redis
        self.keys = K.Keys(s.redis_prefix, s.shards)
        self.url = (f"http://127.0.0.1:{s.dapr_http_port}/v1.0/publish/"
                    f"{s.dapr_pubsub}/{s.dapr_topic_events}")
        self.source = f"agentia/{s.redis_prefix}"
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{random.randrange(1 << 32):08x}"
        self.stopping = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self._busy: set[bytes] = set()
        """Entry ids being published by this process (at most ``dapr_concurrency``)."""
        self._owners: dict[str, str | None] = {}
        self._logged: dict[str, float] = {}
        self._done = redis.register_script(DONE)
        self.published = 0
        # trust_env=False: the sidecar is on loopback, never behind an http_proxy
        self.http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(s.dapr_timeout_s), trust_env=False,
            limits=httpx2.Limits(max_connections=s.dapr_concurrency))

    def streams(self) -> list[str]:
        return [self.keys.dapr_outbox(k) for k in range(K.DAPR_SHARDS)]

    async def ensure_groups(self) -> None:
        for stream in self.streams():
            try:
                await self.redis.xgroup_create(stream, K.DAPR_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self) -> None:
        tasks = [asyncio.create_task(f(stream)) for stream in self.streams()
                 for f in (self._read, self._reclaim)]
        await self.stopping.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.inflight:  # unfinished ones stay pending: reclaimed by the next publisher
            await asyncio.wait(self.inflight, timeout=self.s.dapr_timeout_s + 1)
        await self.http.aclose()

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        """At most one line per kind every 10 s (a sidecar down for an hour logs 360)."""
        now = time.monotonic()
        if now - self._logged.get(kind, -1e9) >= 10:
            self._logged[kind] = now
            log.warning(msg, *args)

    async def _loop(self, step: Any, every: float) -> None:
        while not self.stopping.is_set():
            try:
                await step()
            except REDIS_DOWN as exc:
                self._warn("redis", "dapr: Redis unavailable (%s): retrying", exc)
                await asyncio.sleep(1)
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted empty: the groups again
                    self._warn("nogroup", "dapr: consumer group gone: created again")
                    with contextlib.suppress(*REDIS_DOWN, ResponseError):
                        await self.ensure_groups()
                else:
                    self._warn("error", "dapr: Redis refused a command: %s", exc)
                await asyncio.sleep(1)
                continue
            await asyncio.sleep(every)

    async def _read(self, stream: str) -> None:
        async def step() -> None:
            room = self.s.dapr_concurrency - len(self.inflight)
            if room <= 0:
                await asyncio.sleep(0.05)
                return
            got = await self.redis.xreadgroup(K.DAPR_GROUP, self.consumer, {stream: ">"},
                                              count=min(room, 100), block=1000)
            for _, rows in got or ():
                for eid, fields in rows:
                    self._spawn(stream, eid, fields)
        await self._loop(step, 0)

    async def _reclaim(self, stream: str) -> None:
        """Entries whose publish failed, or whose publisher died, once idle ``dapr_retry_s``."""
        idle_ms = int(self.s.dapr_retry_s * 1000)

        async def step() -> None:
            start = "0-0"
            while len(self.inflight) < self.s.dapr_concurrency:
                res = await self.redis.xautoclaim(stream, K.DAPR_GROUP, self.consumer,
                                                  idle_ms, start, count=50)
                start, rows = res[0], res[1]
                for eid, fields in rows:
                    if fields:  # None: trimmed meanwhile
                        self._spawn(stream, eid, fields)
                if start in (b"0-0", "0-0"):
                    return
        await self._loop(step, min(1.0, self.s.dapr_retry_s / 2))

    def _spawn(self, stream: str, eid: bytes, fields: dict[bytes, bytes]) -> None:
        if eid in self._busy:  # reclaimed while its own call is still running (a slow one)
            return
        self._busy.add(eid)
        task = asyncio.create_task(self._publish(stream, eid, fields))
        self.inflight.add(task)

        def done(t: asyncio.Task[None]) -> None:
            self.inflight.discard(t)
            self._busy.discard(eid)
        task.add_done_callback(done)

    async def _owner(self, sid: str) -> str | None:
        if sid not in self._owners:
            if len(self._owners) > 10_000:
                self._owners.clear()
            raw = await self.redis.hget(self.keys.meta(sid), "owner")
            self._owners[sid] = None if raw is None else raw.decode()
        return self._owners[sid]

    async def _publish(self, stream: str, eid: bytes, raw: dict[bytes, bytes]) -> None:
        try:
            sid, offset, event = raw[b"s"].decode(), int(raw[b"o"]), raw[b"e"]
            queued_ms = int(eid.split(b"-")[0])  # the entry id's time: when it was appended
            body = cloudevent(self.source, sid, await self._owner(sid), offset, event,
                              queued_ms)
        except REDIS_DOWN as exc:  # left pending: reclaimed later
            self._warn("redis", "dapr: Redis unavailable (%s): retrying", exc)
            return
        except (KeyError, ValueError, AttributeError) as exc:  # not an event: dropped
            log.warning("dapr: malformed outbox entry %s dropped (%s)", eid, exc)
            with contextlib.suppress(*REDIS_DOWN):
                await self._done(keys=[stream], args=[eid])
            return
        try:
            r = await self.http.post(self.url, content=body,
                                     headers={"Content-Type": "application/cloudevents+json"})
            await r.aclose()
            error = "" if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
        except httpx2.HTTPError as exc:
            error = type(exc).__name__
        if error:  # stays pending: _reclaim takes it again after dapr_retry_s
            M.DAPR_PUBLISHED.labels("failed").inc()
            self._warn("failed", "dapr: publish to the sidecar failed (%s); retrying", error)
            return
        with contextlib.suppress(*REDIS_DOWN):  # not acked: published again (at least once)
            await self._done(keys=[stream], args=[eid])
            self.published += 1
            M.DAPR_PUBLISHED.labels("published").inc()


async def serve(s: DaprPublishSettings) -> None:
    redis = connect(s.redis_url, s.dapr_concurrency + 2 * K.DAPR_SHARDS + 8)
    p = Publisher(s, redis)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, p.stopping.set)
    try:
        await p.ensure_groups()
        log.info("dapr: %d outbox shards -> %s", K.DAPR_SHARDS, p.url)
        print(f"AGENTIA_DAPR_PUBLISH_READY shards={K.DAPR_SHARDS}", flush=True)
        await p.run()
    finally:
        await redis.aclose()


def run(s: DaprPublishSettings) -> None:
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(serve(s))
