"""The outbox sweeper (run by each ``agentia webhooks`` dispatcher for the webhook outbox and by
each ``agentia dapr-publish`` publisher for the Dapr outbox; docs/backend.md "Webhooks",
docs/dapr.md, sessions/webhook_outbox.py for the cursors and the marks it reads).

Per outbox shard, in batches of ``WEBHOOK_SWEEP_BATCH``, it walks the shard's dirty set and
compares each session's log (meta ``seq``) with its cursor for that outbox (meta ``wc`` or
``dc``):

* caught up: nothing to do; a mark older than ``WEBHOOK_MARK_S`` + the sweep delay is dropped
  (only if nobody marked the session again meanwhile: same score);
* behind: remembered with its ``seq``; still behind that ``seq`` a sweep delay later (the
  fan-out that was on its way never came), the offsets from the cursor to that ``seq`` are
  read from the log, their events of the outbox's types queued (the entries the fan-out would
  have written) and the cursor moved past them;
* gone (no meta): the mark is dropped.

One process sweeps a shard at a time (a lease, :data:`LEASE`), so several dispatchers or
publishers do not re-queue the same events. Memory: one entry per session seen behind (at most
:attr:`Sweeper.MOST`); CPU: one round trip per batch, a pause between batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from sessions import keys as K
from sessions import webhook_outbox as W

# KEYS: dirty; ARGV: session, its score when the sweeper read it. Dropped unless re-marked.
UNMARK = """
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) == tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
return 0
"""

# KEYS: lease; ARGV: holder, ms. 1 when the caller holds (took or renewed) the shard's lease.
LEASE = """
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

PAUSE_S = 0.05
"""Between two batches of one shard (bounds the sweeper's Redis and CPU load)."""


class Sweeper:
    MOST = 100_000
    """Sessions remembered as behind; beyond, the memory starts over (a repair comes one
    delay later, nothing is lost)."""

    def __init__(self, redis: Any, keys: K.Keys, outbox: W.Outbox, delay_s: float, holder: str,
                 warn: Callable[..., None], requeued: Any) -> None:
        self.redis, self.keys, self.outbox, self.n = redis, keys, outbox, outbox.shards
        self.delay = delay_s
        self.holder = holder
        self.warn = warn
        """Rate-limited warnings (the reader's: one line per kind every 10 s)."""
        self.requeued = requeued
        """The counter of events re-queued (``agentia_webhook_requeued_total`` or
        ``agentia_dapr_requeued_total``)."""
        self.behind: dict[str, tuple[float, int]] = {}
        """Session -> (when first seen behind, monotonic s; its seq then)."""
        self._pos = [0] * self.n
        self._unmark = redis.register_script(UNMARK)
        self._lease = redis.register_script(LEASE)

    async def step(self, k: int) -> None:
        """One batch of shard ``k``; at the end of a pass, a pause of half the delay."""
        lease_ms = int(max(10.0, self.delay * 4) * 1000)
        lease = self.outbox.lease(k)
        if not await self._lease(keys=[lease], args=[self.holder, lease_ms]):
            await asyncio.sleep(self.delay / 2)
            return
        dirty = self.outbox.dirty(k)
        pos = self._pos[k]
        rows = await self.redis.zrange(dirty, pos, pos + K.WEBHOOK_SWEEP_BATCH - 1,
                                       withscores=True)
        async with self.redis.pipeline(transaction=False) as pipe:
            for sid, _ in rows:
                pipe.hmget(self.keys.meta(sid.decode()), ["seq", self.outbox.field, "created"])
            metas = await pipe.execute() if rows else []
        dropped = 0
        for (sid, score), meta in zip(rows, metas, strict=True):
            dropped += await self._check(k, sid.decode(), float(score), meta)
        if len(rows) < K.WEBHOOK_SWEEP_BATCH:
            self._pos[k] = 0
            await asyncio.sleep(self.delay / 2)
        else:
            self._pos[k] = pos + len(rows) - dropped
            await asyncio.sleep(PAUSE_S)

    async def _check(self, k: int, sid: str, score: float, meta: list[bytes | None]) -> int:
        """One dirty session; 1 when its mark was dropped."""
        dirty = self.outbox.dirty(k)
        if meta[0] is None:  # deleted or expired
            self.behind.pop(sid, None)
            return int(await self._unmark(keys=[dirty], args=[sid, score]))
        seq = int(meta[0])
        if meta[1] is None:
            await self._init(sid, score, meta[2])
            return 0
        wc = int(meta[1])
        if seq <= wc:
            self.behind.pop(sid, None)
            if score < (time.time() - K.WEBHOOK_MARK_S - self.delay) * 1000:
                return int(await self._unmark(keys=[dirty], args=[sid, score]))
            return 0
        now = time.monotonic()
        seen = self.behind.get(sid)
        if seen is None or wc >= seen[1]:  # new, or it moved past what was seen: look again
            if len(self.behind) >= self.MOST:
                self.behind.clear()
            self.behind[sid] = (now, seq)
        elif now - seen[0] >= self.delay:
            del self.behind[sid]
            await self.requeue(sid, wc, seen[1])
        return 0

    async def _init(self, sid: str, score: float, created: bytes | None) -> None:
        """A session without a cursor: every mark gives one, so none was made since it was
        (re)created. Created after its last mark (with 2 s for clocks), it was appended to by
        a process whose mark of the session's earlier life was still fresh: from 0. Else
        from its seq (appended while webhooks were off: not sent)."""
        fresh = created is not None and int(created) * 1000 >= score - 2000
        await self.redis.eval(W.INIT, 1, self.keys.meta(sid), self.outbox.field,
                              "0" if fresh else "")

    async def requeue(self, sid: str, wc: int, upto: int) -> int:
        """Queue the events of offsets ``wc + 1 .. upto`` (the outbox's types), then move the
        cursor past them; the number queued."""
        first = wc + 1
        if upto - wc > K.WEBHOOK_REPAIR_MAX:
            first = upto - K.WEBHOOK_REPAIR_MAX + 1
            self.warn("sweep-far", "session %s is %d events behind its %s cursor: only "
                      "the last %d are queued", sid, upto - wc, self.outbox.name,
                      K.WEBHOOK_REPAIR_MAX)
        rows = await self.redis.xrange(self.keys.log(sid), f"0-{first}", f"0-{upto}",
                                       count=K.WEBHOOK_REPAIR_MAX)
        pairs = ((int(rid.split(b"-")[1]), f[b"e"]) for rid, f in rows)
        entries = self.outbox.entries(sid, pairs)
        if entries:
            async with self.redis.pipeline(transaction=False) as pipe:
                for stream, fields in entries:
                    pipe.xadd(stream, fields, maxlen=K.OUTBOX_MAXLEN, approximate=True)
                await pipe.execute()
        # only now: the events are in the outbox (another master on a Cluster)
        await self.redis.eval(W.ADVANCE, 1, self.keys.meta(sid), self.outbox.field, wc + 1,
                              upto)
        if entries:
            self.requeued.inc(len(entries))
            self.warn("sweep", "session %s: %d events re-queued from its log to the %s "
                      "outbox (offsets %d-%d: their appender did not queue them; "
                      "agentia_%s_requeued_total counts all)", sid, len(entries),
                      self.outbox.name, first, upto, self.outbox.name)
        return len(entries)
