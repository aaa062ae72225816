"""The webhook dispatcher (``agentia webhooks``; docs/backend.md "Webhooks").

Appends copy the events of ``AGENTIA_WEBHOOK_EVENTS`` into the outbox shard streams
(sessions/delivery_redis.py, in the fan-out's pipeline). Each dispatcher reads every shard
through the consumer group :data:`~sessions.keys.WEBHOOK_GROUP` (several dispatchers share
the work) and POSTs one event per request, at most ``webhook_concurrency`` at once:

* 2xx: delivered (XACK + XDEL).
* anything else (a status, a refused connection, a timeout): the entry moves, atomically, to
  the shard's retry set, due after ``webhook_retry_s * 2^(attempt-1)`` (+-20 %, at most
  ``webhook_retry_max_s``); a promoter moves due entries back into the stream. After
  ``webhook_max_attempts`` attempts, or once older than ``webhook_max_age_s``, it goes to the
  shard's dead-letter stream instead, with its last error.
* a dispatcher that dies mid-POST: its entries stay pending and another (or it, restarted)
  takes them over with XAUTOCLAIM once idle longer than a POST can take.
* an appender that dies between its log append and its outbox write: the sweeper
  (sessions/webhook_sweep.py) re-queues the events from the session log once the session's
  webhook cursor has stayed behind its log for ``webhook_sweep_s``.

So every event is POSTed at least once; the ``X-Agentia-Delivery`` id lets a receiver drop
the duplicates. Order is not kept across retries (``offset`` orders a session's events).
Every key of one shard shares its hash tag, so every script here touches one slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import os
import random
import signal
import socket
import time
from typing import Any

import httpx2
import orjson
from redis.exceptions import ResponseError

from agentia import metrics as M
from agentia.settings import WebhookSettings
from sessions import keys as K
from sessions.redis_client import REDIS_DOWN, RedisClient, connect
from sessions.webhook_sweep import Sweeper

log = logging.getLogger("agentia.webhooks")

FIELDS = ("s", "o", "e", "d", "t", "n")

# KEYS: outbox; ARGV: entry id. Delivered: 1, or 0 when it was no longer pending (another
# dispatcher took it over and finished it).
DONE = """
local acked = redis.call('XACK', KEYS[1], '""" + K.WEBHOOK_GROUP + """', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
return acked
"""

# KEYS: outbox, retry; ARGV: entry id, due (ms), the entry (JSON)
RETRY = """
if redis.call('XACK', KEYS[1], '""" + K.WEBHOOK_GROUP + """', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
return 1
"""

# KEYS: outbox, dead; ARGV: entry id, maxlen, field, value, ...
DEAD = """
if redis.call('XACK', KEYS[1], '""" + K.WEBHOOK_GROUP + """', ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
"""

# KEYS: outbox, retry; ARGV: now (ms), most moved
# Due retries back into the stream (a new entry id: a dispatcher reads it like a new one).
PROMOTE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(due) do
  local f = cjson.decode(m)
  redis.call('XADD', KEYS[1], '*', 's', f.s, 'o', f.o, 'e', f.e, 'd', f.d, 't', f.t, 'n', f.n)
  redis.call('ZREM', KEYS[2], m)
end
return #due
"""


def sign(secret: bytes, body: bytes) -> str:
    """``X-Agentia-Signature``'s value."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def backoff(attempt: int, first: float, most: float) -> float:
    """Seconds before attempt ``attempt + 1`` (after ``attempt`` failures), jittered."""
    return float(min(most, first * 2.0 ** (attempt - 1)) * random.uniform(0.8, 1.2))


class Dispatcher:
    def __init__(self, s: WebhookSettings, redis: RedisClient) -> None:
        self.s = s
        self.redis: Any = redis
        self.keys = K.Keys(s.redis_prefix, s.shards)
        self.n = s.webhook_shards
        self.secret = s.webhook_secret.encode()
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{random.randrange(1 << 32):08x}"
        self.stopping = asyncio.Event()
        self.inflight: set[asyncio.Task[None]] = set()
        self._owners: dict[str, str | None] = {}
        self._logged: dict[str, float] = {}
        self._done = redis.register_script(DONE)
        self._retry = redis.register_script(RETRY)
        self._dead = redis.register_script(DEAD)
        self._promote = redis.register_script(PROMOTE)
        self.sweeper = Sweeper(redis, self.keys, self.n, s.webhook_types(), s.webhook_sweep_s,
                               self.consumer, self._warn)
        self.http = httpx2.AsyncClient(
            timeout=httpx2.Timeout(s.webhook_timeout_s),
            limits=httpx2.Limits(max_connections=s.webhook_concurrency))

    async def ensure_groups(self) -> None:
        for k in range(self.n):
            try:
                await self.redis.xgroup_create(self.keys.outbox(k, self.n), K.WEBHOOK_GROUP,
                                               id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self) -> None:
        loops = [f(k) for k in range(self.n)
                 for f in (self._read, self._reclaim, self._promoter, self._sweep)]
        tasks = [asyncio.create_task(c) for c in loops]
        await self.stopping.wait()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.inflight:  # unfinished ones stay pending: reclaimed by the next dispatcher
            await asyncio.wait(self.inflight, timeout=self.s.webhook_timeout_s + 1)
        await self.http.aclose()

    def _warn(self, kind: str, msg: str, *args: object) -> None:
        """At most one line per kind every 10 s (a receiver down for an hour logs 360)."""
        now = time.monotonic()
        if now - self._logged.get(kind, -1e9) >= 10:
            self._logged[kind] = now
            log.warning(msg, *args)

    async def _loop(self, step: Any, every: float) -> None:
        while not self.stopping.is_set():
            try:
                await step()
            except REDIS_DOWN as exc:
                self._warn("redis", "webhooks: Redis unavailable (%s): retrying", exc)
                await asyncio.sleep(1)
                continue
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # Redis restarted empty: the groups again
                    self._warn("nogroup", "webhooks: consumer group gone: created again")
                    with contextlib.suppress(*REDIS_DOWN, ResponseError):
                        await self.ensure_groups()
                else:
                    self._warn("error", "webhooks: Redis refused a command: %s", exc)
                await asyncio.sleep(1)
                continue
            await asyncio.sleep(every)

    async def _read(self, k: int) -> None:
        stream = self.keys.outbox(k, self.n)

        async def step() -> None:
            room = self.s.webhook_concurrency - len(self.inflight)
            if room <= 0:
                await asyncio.sleep(0.05)
                return
            got = await self.redis.xreadgroup(K.WEBHOOK_GROUP, self.consumer, {stream: ">"},
                                              count=min(room, 100), block=1000)
            for _, rows in got or ():
                for eid, fields in rows:
                    self._spawn(k, eid, fields)
        await self._loop(step, 0)

    async def _reclaim(self, k: int) -> None:
        """Entries of a dispatcher that died mid-POST (idle longer than any POST takes)."""
        stream = self.keys.outbox(k, self.n)
        idle_ms = int((self.s.webhook_timeout_s * 2 + 10) * 1000)

        async def step() -> None:
            start = "0-0"
            while len(self.inflight) < self.s.webhook_concurrency:
                res = await self.redis.xautoclaim(stream, K.WEBHOOK_GROUP, self.consumer,
                                                  idle_ms, start, count=50)
                start, rows = res[0], res[1]
                for eid, fields in rows:
                    if fields:  # None: deleted meanwhile
                        self._spawn(k, eid, fields)
                if start in (b"0-0", "0-0"):
                    return
        await self._loop(step, 5.0)

    async def _promoter(self, k: int) -> None:
        stream, retry = self.keys.outbox(k, self.n), self.keys.webhook_retry(k, self.n)

        async def step() -> None:
            now = int(time.time() * 1000)
            await self._promote(keys=[stream, retry], args=[now, 200])
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xlen(stream)
                pipe.zcard(retry)
                queued, waiting = await pipe.execute()
            M.WEBHOOK_LAG.labels(str(k)).set(int(queued) + int(waiting))
        await self._loop(step, 0.25)

    async def _sweep(self, k: int) -> None:
        """Events appended but never queued (sessions/webhook_sweep.py)."""
        async def step() -> None:
            await self.sweeper.step(k)
        await self._loop(step, 0)

    def _spawn(self, k: int, eid: bytes, fields: dict[bytes, bytes]) -> None:
        task = asyncio.create_task(self._deliver(k, eid, fields))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)

    async def _owner(self, sid: str) -> str | None:
        if sid not in self._owners:
            if len(self._owners) > 10_000:
                self._owners.clear()
            raw = await self.redis.hget(self.keys.meta(sid), "owner")
            self._owners[sid] = None if raw is None else raw.decode()
        return self._owners[sid]

    async def _deliver(self, k: int, eid: bytes, raw: dict[bytes, bytes]) -> None:
        f = {key.decode(): value for key, value in raw.items()}
        try:
            await self._attempt(k, eid, f)
        except REDIS_DOWN as exc:  # left pending: reclaimed later
            self._warn("redis", "webhooks: Redis unavailable (%s): retrying", exc)
        except Exception:  # a malformed entry must not stop the dispatcher
            log.exception("webhooks: entry %s of shard %d", eid, k)

    async def _attempt(self, k: int, eid: bytes, f: dict[str, bytes]) -> None:
        sid, delivery = f["s"].decode(), f["d"].decode()
        attempt = int(f.get("n", b"1"))
        body = orjson.dumps({"session": sid, "user": await self._owner(sid),
                             "offset": int(f["o"]), "event": orjson.Fragment(f["e"])})
        headers = {"Content-Type": "application/json", "User-Agent": "agentia-webhooks",
                   "X-Agentia-Signature": sign(self.secret, body),
                   "X-Agentia-Delivery": delivery, "X-Agentia-Attempt": str(attempt)}
        try:
            r = await self.http.post(self.s.webhook_url, content=body, headers=headers)
            await r.aclose()
            error = "" if 200 <= r.status_code < 300 else f"HTTP {r.status_code}"
        except httpx2.HTTPError as exc:
            error = type(exc).__name__
        stream = self.keys.outbox(k, self.n)
        if not error:
            await self._done(keys=[stream], args=[eid])
            M.WEBHOOKS.labels("delivered").inc()
            return
        M.WEBHOOKS.labels("failed").inc()
        self._warn("failed", "webhooks: POST to the receiver failed (%s); retrying", error)
        now = time.time()
        if attempt >= self.s.webhook_max_attempts or \
                now - int(f["t"]) / 1000 >= self.s.webhook_max_age_s:
            pairs = [x for name in FIELDS if name in f for x in (name, f[name])]
            if await self._dead(keys=[stream, self.keys.webhook_dead(k, self.n)],
                                args=[eid, K.WEBHOOK_DEAD_MAXLEN, *pairs, "n", attempt,
                                      "error", error, "at", int(now * 1000)]):
                M.WEBHOOKS.labels("dead_lettered").inc()
                log.warning("webhooks: delivery %s (session %s offset %s) dead-lettered after "
                            "%d attempts: %s", delivery, sid, int(f["o"]), attempt, error)
            return
        due = now + backoff(attempt, self.s.webhook_retry_s, self.s.webhook_retry_max_s)
        entry = orjson.dumps({"s": sid, "o": f["o"].decode(), "e": f["e"].decode(),
                              "d": delivery, "t": f["t"].decode(), "n": str(attempt + 1)})
        await self._retry(keys=[stream, self.keys.webhook_retry(k, self.n)],
                          args=[eid, int(due * 1000), entry])


async def serve(s: WebhookSettings) -> None:
    redis = connect(s.redis_url, s.webhook_concurrency + 4 * s.webhook_shards + 8)
    d = Dispatcher(s, redis)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, d.stopping.set)
    try:
        await d.ensure_groups()
        log.info("webhooks: %d outbox shards -> %s", d.n, s.webhook_url)
        print(f"AGENTIA_WEBHOOKS_READY shards={d.n}", flush=True)
        await d.run()
    finally:
        await redis.aclose()


def run(s: WebhookSettings) -> None:
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(serve(s))
