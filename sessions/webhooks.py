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
import random
import time
from collections.abc import Coroutine
from typing import Any

import httpx2
import orjson

from agentia import metrics as M
from agentia.settings_outbox import WebhookSettings
from sessions import keys as K
from sessions import webhook_outbox as W
from sessions.outbox_reader import OutboxReader
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


class Dispatcher(OutboxReader):
    name = "webhooks"

    def __init__(self, s: WebhookSettings, redis: RedisClient) -> None:
        super().__init__(redis, K.Keys(s.redis_prefix, s.shards), K.WEBHOOK_GROUP,
                         s.webhook_concurrency, s.webhook_timeout_s, log)
        self.s = s
        self.n = s.webhook_shards
        self.secret = s.webhook_secret.encode()
        self.shard_of = {self.keys.outbox(k, self.n): k for k in range(self.n)}
        self.reclaim_idle_s = s.webhook_timeout_s * 2 + 10  # longer than any POST takes
        self._done = redis.register_script(DONE)
        self._retry = redis.register_script(RETRY)
        self._dead = redis.register_script(DEAD)
        self._promote = redis.register_script(PROMOTE)
        self.sweeper = Sweeper(redis, self.keys,
                               W.webhook_outbox(self.keys, self.n, s.webhook_types()),
                               s.webhook_sweep_s, self.consumer, self.warn, M.WEBHOOK_REQUEUED)

    def streams(self) -> list[str]:
        return list(self.shard_of)

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        return [*super().loops(),
                *(f(k) for k in range(self.n) for f in (self._promoter, self._sweep))]

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
        await self.loop(step, 0.25)

    async def _sweep(self, k: int) -> None:
        """Events appended but never queued (sessions/webhook_sweep.py)."""
        async def step() -> None:
            await self.sweeper.step(k)
        await self.loop(step, 0)

    async def handle(self, stream: str, eid: bytes, raw: dict[bytes, bytes]) -> None:
        k = self.shard_of[stream]
        f = {key.decode(): value for key, value in raw.items()}
        try:
            await self._attempt(k, eid, f)
        except REDIS_DOWN as exc:  # left pending: reclaimed later
            self.warn("redis", "Redis unavailable (%s): retrying", exc)
        except Exception:  # a malformed entry must not stop the dispatcher
            log.exception("webhooks: entry %s of shard %d", eid, k)

    async def _attempt(self, k: int, eid: bytes, f: dict[str, bytes]) -> None:
        sid, delivery = f["s"].decode(), f["d"].decode()
        attempt = int(f.get("n", b"1"))
        body = orjson.dumps({"session": sid, "user": await self.owner(sid),
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
        self.warn("failed", "POST to the receiver failed (%s); retrying", error)
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
    await Dispatcher(s, redis).serve("AGENTIA_WEBHOOKS_READY", s.webhook_url)


def run(s: WebhookSettings) -> None:
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(serve(s))
