"""The writes of a worker's tick of chunks that are copies of something kept elsewhere (issue
13, session 19): the delivery entries (each node's chunk records, the log events left for the
tick) and the partial buffer's every-tenth piece, with the first chunk's ``EXPIRE`` of a node's
stream. sessions/log_redis.py ``stream_chunks`` gathers them here and sends them in its pipeline.

On a single Redis they go as **one script that Redis neither writes to its AOF nor sends to its
replicas** (``redis.set_repl(redis.REPL_NONE)``): every ~40 ms tick was a loop of redis-server
that wrote the AOF (a ``write()`` of the tick's ~2.5 KB of records at 40 sessions, and the same
bytes down each replica's link) for data that is not durable by design (docs/architecture.md,
"Reply text: chunks off the log": a piece is not durable on its own, the turn's ending carries
the whole text, and a log event's delivery copy is re-read from the log by an edge that finds a
gap). A tick that carries nothing else (no ending, no deferred append: those stay their own
scripts, written and replicated as before) now leaves the AOF alone. And the node's blocked
delivery read is answered once, after the script, with every entry of the tick; as separate
commands it was answered after the first ``XADD`` and the next read took the rest.

What a restart from the AOF or a failover to a replica loses: the running turns' pieces in
their partial buffers and the delivery entries not yet read. The partial's reader stops at the
first missing piece (sessions/attempts_redis.py ``partial``), so a reader that joins then gets
the text up to it and the rest in the turn's ending: no gap, no duplicate.

On a Cluster the keys live on several masters: the same writes go as separate commands, each
to its key's master, written and replicated as before.
"""

from __future__ import annotations

from typing import Any

from sessions import keys as K

TICK = """
redis.replicate_commands()
redis.set_repl(redis.REPL_NONE)
local i = 2
while i <= #ARGV do
  local op, key = ARGV[i], KEYS[tonumber(ARGV[i + 1])]
  if op == 'x' then
    local n = tonumber(ARGV[i + 2])
    redis.call('XADD', key, 'MAXLEN', '~', ARGV[1], '*', unpack(ARGV, i + 3, i + 2 + n))
    i = i + 3 + n
  elseif op == 'p' then
    redis.call('RPUSHX', key, ARGV[i + 2])
    i = i + 3
  else
    redis.call('EXPIRE', key, ARGV[i + 2])
    i = i + 3
  end
end
return 0
"""
"""KEYS: the keys written; ARGV[1]: the delivery streams' ``MAXLEN ~``; then ops: ``x <key #>
<n> <n field and value args>`` (XADD), ``p <key #> <value>`` (RPUSHX), ``e <key #> <ttl>``
(EXPIRE). Not propagated: see the module's docstring."""


class TickWrites:
    """A tick's copies, in the order they were added (entries of one node stay in order)."""

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[tuple[str, str, tuple[Any, ...]]] = []

    def xadd(self, stream: str, fields: dict[Any, Any]) -> None:
        flat = [x for pair in fields.items() for x in pair]
        self._add("x", stream, (len(flat), *flat))

    def rpushx(self, key: str, value: Any) -> None:
        self._add("p", key, (value,))

    def expire(self, key: str, ttl: int) -> None:
        self._add("e", key, (ttl,))

    def _add(self, op: str, key: str, args: tuple[Any, ...]) -> None:
        self._ops.append((op, key, args))

    def __bool__(self) -> bool:
        return bool(self._ops)

    def queue(self, pipe: Any, script: bool) -> None:
        """Queue the writes on ``pipe``: one unpropagated script (``script``: a single Redis;
        nothing when there is nothing to write) or one command each (a Cluster)."""
        if not self._ops:
            return
        if not script:
            for op, key, args in self._ops:
                if op == "x":
                    pipe.xadd(key, dict(zip(args[1::2], args[2::2], strict=True)),
                              maxlen=K.DELIVERY_MAXLEN, approximate=True)
                elif op == "p":
                    pipe.rpushx(key, *args)
                else:
                    pipe.expire(key, *args)
            return
        keys: dict[str, int] = {}
        argv: list[Any] = [K.DELIVERY_MAXLEN]
        for op, key, args in self._ops:
            at = keys.setdefault(key, len(keys) + 1)
            argv += (op, at, *args)
        pipe.execute_command("EVAL", TICK, len(keys), *keys, *argv)
