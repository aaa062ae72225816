"""The webhook outbox's write side and its cursor (docs/backend.md "Webhooks", docs/architecture.md
"Webhooks: at least once").

An append copies its events of the webhook types to an outbox shard stream in its fan-out
pipeline, after the log append script. Both cannot be one script (the outbox shard and the
session are different slots), so a process killed between them, or an outbox master failing
over under the XADD, would lose that event's webhook. Three pieces close the gap:

* the **cursor**: meta ``wc`` of the session, every offset up to it is in the outbox. The
  fan-out advances it (:data:`ADVANCE`) only after its outbox XADDs: in the same pipeline on a
  single Redis (commands of one connection run in order), in a second call on a Cluster.
* the **mark**: before appending, the appender puts the session in its outbox shard's dirty
  set (:meth:`sessions.keys.Keys.webhook_dirty`) and creates its cursor if missing
  (:data:`INIT`), at most once per ``WEBHOOK_MARK_S`` per session and process: a refused mark
  refuses the append (retryable), so no event is appended without the session being findable.
* the **sweeper** (sessions/webhook_sweep.py, in the dispatcher) re-queues from the log the
  offsets a session's cursor has stayed behind for ``AGENTIA_WEBHOOK_SWEEP_S``.

A re-queued event has the delivery id the fan-out would have given it (a digest of session,
offset and event), so a double enqueue reaches the receiver as a repeat it already drops.
With webhooks off none of this runs: no command, no field.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Iterable
from typing import Any

import orjson

from sessions import keys as K

# KEYS: meta; ARGV: first, last. The offsets first..last are in the outbox: the cursor moves
# to last if it had reached first - 1 (or beyond: the sweeper re-queued some), never back. A
# fan-out that finishes before an earlier one (two appenders of one session) leaves it where
# it is: the sweeper re-queues the later offsets too (repeats the receiver drops). Nothing is
# created: a session without meta (deleted) or without a cursor (see INIT) is left alone.
ADVANCE = """
local wc = tonumber(redis.call('HGET', KEYS[1], 'wc') or '-1')
if wc < 0 or wc < tonumber(ARGV[1]) - 1 or wc >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'wc', ARGV[2])
return 1
"""

# KEYS: meta; ARGV: value ("" = the current seq). The session's cursor where it has none yet:
# at its last offset (what was appended while webhooks were off is not sent), or at the value
# given (the sweeper: 0 for a session created after its mark).
INIT = """
if redis.call('HEXISTS', KEYS[1], 'wc') == 1 then return 0 end
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then return 0 end
if ARGV[1] ~= '' then seq = ARGV[1] end
redis.call('HSET', KEYS[1], 'wc', seq)
return 1
"""


def shard_of(sid: str, shards: int) -> int:
    """The outbox shard of a session."""
    return zlib.crc32(sid.encode()) % shards


def delivery_id(sid: str, offset: int, event: bytes) -> str:
    """``X-Agentia-Delivery``: the same for every copy of one event (a retried append, a
    re-queue by the sweeper), different for a session id reused after a delete."""
    return hashlib.blake2b(b"%s\0%d\0%s" % (sid.encode(), offset, event),
                           digest_size=12).hexdigest()


def outbox_entries(keys: K.Keys, shards: int, sid: str, events: Iterable[tuple[int, bytes]],
                   types: frozenset[str]) -> list[tuple[str, dict[str, Any]]]:
    """The outbox entries of ``(offset, event)`` pairs whose type is in ``types``."""
    stream = keys.outbox(shard_of(sid, shards), shards)
    now = int(time.time() * 1000)
    out = []
    for offset, event in events:
        if orjson.loads(event).get("type") in types:
            out.append((stream, {"s": sid, "o": offset, "e": event,
                                 "d": delivery_id(sid, offset, event), "t": now}))
    return out


class Marks:
    """The sessions this process marked dirty recently (bounded: forgetting one costs one more
    mark, never a lost event)."""

    MOST = 100_000

    def __init__(self) -> None:
        self._at: dict[str, float] = {}

    def due(self, sid: str, now: float) -> bool:
        return now - self._at.get(sid, -1e18) >= K.WEBHOOK_MARK_S

    def done(self, sid: str, now: float) -> None:
        if len(self._at) >= self.MOST:
            self._at.clear()
        self._at[sid] = now


async def mark(redis: Any, keys: K.Keys, shards: int, sid: str) -> None:
    """Put ``sid`` in its outbox shard's dirty set and give it a cursor (one round trip; two
    slots, so no script spans them). Raises what the client raises."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zadd(keys.webhook_dirty(shard_of(sid, shards), shards),
                  {sid: int(time.time() * 1000)})
        pipe.execute_command("EVAL", INIT, 1, keys.meta(sid), "")
        await pipe.execute()
