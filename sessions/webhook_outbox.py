"""The outboxes' write side and their cursors: the webhook outbox (docs/backend.md "Webhooks",
docs/architecture.md "Webhooks: at least once") and the Dapr outbox (docs/dapr.md).

An append copies its events of an outbox's types to that outbox's shard stream in its fan-out
pipeline, after the log append script. Both cannot be one script (the outbox shard and the
session are different slots), so a process killed between them, or an outbox master failing
over under the XADD, would lose that event's webhook or CloudEvent. Three pieces close the gap,
the same for each outbox (:class:`Outbox`):

* the **cursor**: a field of the session's meta (``wc`` webhooks, ``dc`` Dapr), every offset up
  to it is in the outbox. The fan-out advances it (:data:`ADVANCE`) only after its outbox
  XADDs: in the same pipeline on a single Redis (commands of one connection run in order), in a
  second call on a Cluster.
* the **mark**: before appending, the appender puts the session in each outbox shard's dirty
  set (:attr:`Outbox.dirty`) and creates its cursors if missing (:data:`INIT`), at most once
  per ``WEBHOOK_MARK_S`` per session and process: a refused mark refuses the append
  (retryable), so no event is appended without the session being findable.
* the **sweeper** (sessions/webhook_sweep.py, in the webhook dispatcher and in the Dapr
  publisher) re-queues from the log the offsets a session's cursor has stayed behind for
  ``AGENTIA_WEBHOOK_SWEEP_S`` / ``AGENTIA_DAPR_SWEEP_S``.

A re-queued event is the entry the fan-out would have written (a webhook keeps its delivery id,
a digest of session, offset and event; a CloudEvent its id ``<session>:<offset>``), so a double
enqueue reaches the receiver as a repeat it already drops. With an outbox off none of this runs
for it: no command, no field.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from sessions import keys as K

# KEYS: meta; ARGV: cursor field, first, last. The offsets first..last are in the outbox: the
# cursor moves to last if it had reached first - 1 (or beyond: the sweeper re-queued some),
# never back. A fan-out that finishes before an earlier one (two appenders of one session)
# leaves it where it is: the sweeper re-queues the later offsets too (repeats the receiver
# drops). Nothing is created: a session without meta (deleted) or without that cursor (see
# INIT) is left alone.
ADVANCE = """
local c = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
if c < 0 or c < tonumber(ARGV[2]) - 1 or c >= tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""

# KEYS: meta; ARGV: cursor field, value ("" = the current seq). The session's cursor where it
# has none yet: at its last offset (what was appended while the outbox was off is not sent), or
# at the value given (the sweeper: 0 for a session created after its mark).
INIT = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
local seq = redis.call('HGET', KEYS[1], 'seq')
if not seq then return 0 end
if ARGV[2] ~= '' then seq = ARGV[2] end
redis.call('HSET', KEYS[1], ARGV[1], seq)
return 1
"""

Entries = list[tuple[str, dict[str, Any]]]
"""Outbox entries: (shard stream, fields) pairs, XADDed in the fan-out's pipeline."""


@dataclass(frozen=True, slots=True)
class Outbox:
    """One outbox as its cursor, mark and sweeper see it."""

    name: str
    """``webhook`` or ``dapr`` (in the sweeper's warnings)."""
    field: str
    """The cursor's field in the session's meta."""
    shards: int
    dirty: Callable[[int], str]
    """Shard -> its sorted set of marked sessions."""
    lease: Callable[[int], str]
    """Shard -> the key of the sweeper holding it."""
    entries: Callable[[str, Iterable[tuple[int, bytes]]], Entries]
    """(session, (offset, event) pairs) -> its entries (the outbox's types only)."""

    def dirty_of(self, sid: str) -> str:
        return self.dirty(shard_of(sid, self.shards))


def webhook_outbox(keys: K.Keys, shards: int, types: frozenset[str]) -> Outbox:
    return Outbox("webhook", "wc", shards, lambda k: keys.webhook_dirty(k, shards),
                  lambda k: keys.webhook_sweeper(k, shards),
                  lambda sid, pairs: outbox_entries(keys, shards, sid, pairs, types))


def dapr_outbox(keys: K.Keys, types: frozenset[str]) -> Outbox:
    return Outbox("dapr", "dc", K.DAPR_SHARDS, keys.dapr_dirty, keys.dapr_sweeper,
                  lambda sid, pairs: dapr_entries(keys, sid, pairs, types))


def shard_of(sid: str, shards: int) -> int:
    """The outbox shard of a session."""
    return zlib.crc32(sid.encode()) % shards


def delivery_id(sid: str, offset: int, event: bytes) -> str:
    """``X-Agentia-Delivery``: the same for every copy of one event (a retried append, a
    re-queue by the sweeper), different for a session id reused after a delete."""
    return hashlib.blake2b(b"%s\0%d\0%s" % (sid.encode(), offset, event),
                           digest_size=12).hexdigest()


def outbox_entries(keys: K.Keys, shards: int, sid: str, events: Iterable[tuple[int, bytes]],
                   types: frozenset[str]) -> Entries:
    """The outbox entries of ``(offset, event)`` pairs whose type is in ``types``."""
    stream = keys.outbox(shard_of(sid, shards), shards)
    now = int(time.time() * 1000)
    out = []
    for offset, event in events:
        if orjson.loads(event).get("type") in types:
            out.append((stream, {"s": sid, "o": offset, "e": event,
                                 "d": delivery_id(sid, offset, event), "t": now}))
    return out


def dapr_entries(keys: K.Keys, sid: str, events: Iterable[tuple[int, bytes]],
                 types: frozenset[str]) -> Entries:
    """The Dapr outbox entries of ``(offset, event)`` pairs whose type is in ``types``
    (sessions/dapr_publish.py reads them)."""
    stream = keys.dapr_outbox(shard_of(sid, K.DAPR_SHARDS))
    return [(stream, {"s": sid, "o": offset, "e": event}) for offset, event in events
            if orjson.loads(event).get("type") in types]


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


async def mark(redis: Any, keys: K.Keys, outboxes: Iterable[Outbox], sid: str) -> None:
    """Put ``sid`` in each outbox's dirty set and give it their cursors (one round trip; other
    slots than the session's, so no script spans them). Raises what the client raises."""
    now = int(time.time() * 1000)
    async with redis.pipeline(transaction=False) as pipe:
        for o in outboxes:
            pipe.zadd(o.dirty_of(sid), {sid: now})
            pipe.execute_command("EVAL", INIT, 1, keys.meta(sid), o.field, "")
        await pipe.execute()
