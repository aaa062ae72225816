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

An appender that dies between its log append and its outbox write: the sweeper
(sessions/webhook_sweep.py, one per shard, as in the webhook dispatcher) re-queues the events
from the session log once the session's Dapr cursor (meta ``dc``) has stayed behind for
``dapr_sweep_s``.

So every event is published at least once; its CloudEvent ``id`` (``<session>:<offset>``) lets
a subscriber drop the duplicates. No dead letters here: a sidecar that refuses is retried
until it accepts (Dapr's own resiliency policies and dead-letter topics apply after that).
Chat turns never wait on this: the appends only XADD to Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

import httpx2
import orjson

from agentia import metrics as M
from agentia.settings_outbox import DaprPublishSettings
from sessions import keys as K
from sessions import webhook_outbox as W
from sessions.outbox_reader import OutboxReader
from sessions.redis_client import REDIS_DOWN, RedisClient, connect
from sessions.webhook_sweep import Sweeper

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


class Publisher(OutboxReader):
    name = "dapr"

    def __init__(self, s: DaprPublishSettings, redis: RedisClient) -> None:
        # trust_env=False: the sidecar is on loopback, never behind an http_proxy
        super().__init__(redis, K.Keys(s.redis_prefix, s.shards), K.DAPR_GROUP,
                         s.dapr_concurrency, s.dapr_timeout_s, log, trust_env=False)
        self.s = s
        self.url = (f"http://127.0.0.1:{s.dapr_http_port}/v1.0/publish/"
                    f"{s.dapr_pubsub}/{s.dapr_topic_events}")
        self.source = f"agentia/{s.redis_prefix}"
        # a failed publish stays pending: taken again once idle dapr_retry_s
        self.reclaim_idle_s = s.dapr_retry_s
        self.reclaim_every_s = min(1.0, s.dapr_retry_s / 2)
        self._done = redis.register_script(DONE)
        self.published = 0
        self.sweeper = Sweeper(redis, self.keys, W.dapr_outbox(self.keys, s.dapr_types()),
                               s.dapr_sweep_s, self.consumer, self.warn, M.DAPR_REQUEUED)

    def streams(self) -> list[str]:
        return [self.keys.dapr_outbox(k) for k in range(K.DAPR_SHARDS)]

    def loops(self) -> list[Coroutine[Any, Any, None]]:
        return [*super().loops(), *(self._sweep(k) for k in range(K.DAPR_SHARDS))]

    async def _sweep(self, k: int) -> None:
        """Events appended but never queued (sessions/webhook_sweep.py)."""
        async def step() -> None:
            await self.sweeper.step(k)
        await self.loop(step, 0)

    async def handle(self, stream: str, eid: bytes, raw: dict[bytes, bytes]) -> None:
        try:
            sid, offset, event = raw[b"s"].decode(), int(raw[b"o"]), raw[b"e"]
            queued_ms = int(eid.split(b"-")[0])  # the entry id's time: when it was appended
            body = cloudevent(self.source, sid, await self.owner(sid), offset, event,
                              queued_ms)
        except REDIS_DOWN as exc:  # left pending: reclaimed later
            self.warn("redis", "Redis unavailable (%s): retrying", exc)
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
            self.warn("failed", "publish to the sidecar failed (%s); retrying", error)
            return
        with contextlib.suppress(*REDIS_DOWN):  # not acked: published again (at least once)
            await self._done(keys=[stream], args=[eid])
            self.published += 1
            M.DAPR_PUBLISHED.labels("published").inc()


async def serve(s: DaprPublishSettings) -> None:
    redis = connect(s.redis_url, s.dapr_concurrency + 2 * K.DAPR_SHARDS + 8)
    p = Publisher(s, redis)
    await p.serve("AGENTIA_DAPR_PUBLISH_READY", p.url)


def run(s: DaprPublishSettings) -> None:
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(serve(s))
