"""A node's delivery reads on a single Redis, asked for ahead (issue 13, session 12).

A node reads its delivery stream in a loop, one read per batch of events; each read it sends is
a wake-up of Redis (a socket found readable, a request parsed), and at 40 ms ticks that was one
of the two wake-ups of every tick (the other: the worker's pipeline that writes the tick).
Here the node's reader connection carries up to :data:`AHEAD` reads at once, all the same
``XREADGROUP … NOACK … >`` of the node's one consumer group (:data:`sessions.keys.DELIVERY_GROUP`):
Redis serves the first when events come and takes the next from the connection's buffer in
the same loop, without reading the socket again, and blocks on it. The node sends
``AHEAD - LOW + 1`` reads in one write whenever fewer than :data:`LOW` are left, so a tick costs
Redis its worker's wake-up and one every few ticks for the node.

``>`` reads what the group has not handed out yet, so no read names an id; the group's
position is what the node was last given, set from the caller's ``last_id`` whenever the reads
are (re)started (:data:`START`): a read cut short (cancelled, timed out, a dropped connection,
an error) drops the connection with every read on it, and the next call starts again from the
last id its caller saw, so events a dropped read took are read again, never lost. A call whose
``last_id`` or block is not the one the reads in flight continue from starts them again too.
The stream deleted under a blocked read (a node dropped, Redis forgot it) answers an error:
started again, which makes the stream (with its TTL) and the group at the caller's id.
NOACK: the group keeps no pending list (the node's own position is the ack).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.exceptions import ResponseError

from sessions import keys as K

AHEAD = 16
"""Reads in flight on a node's reader connection at most (8 until session 16: a send of 5 reads
every 5th tick; now 13 every 13th, ~0.6 of Redis's socket reads fewer per 300-word turn at 40
sessions; the reads waiting in Redis's buffer cost it nothing until their turn comes)."""
LOW = 4
"""Fewer reads in flight than this: send more, up to :data:`AHEAD`, in one write."""

START = """
-- KEYS[1] a node's delivery stream; ARGV[1] the id its reader was last given, ARGV[2] the
-- stream's TTL (for a stream made here; a live node's heartbeat renews it), ARGV[3] the group
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[3], ARGV[1], 'MKSTREAM')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 0
end
local made = redis.pcall('XGROUP', 'CREATE', KEYS[1], ARGV[3], ARGV[1])
if type(made) == 'table' and made.err then
  redis.call('XGROUP', 'SETID', KEYS[1], ARGV[3], ARGV[1])
end
return 1
"""


@dataclass(slots=True)
class Ahead:
    """A node's reader connection and the reads in flight on it."""

    conn: Any
    after: bytes
    """The id of the last event handed to the caller: what its next call continues from."""
    block_ms: int
    pending: int = 0
    """Reads sent and not answered yet."""
    started: bool = False
    """The group was set at :attr:`after` on this connection (:func:`start`)."""


def read_args(key: str, block_ms: int) -> tuple[Any, ...]:
    return ("XREADGROUP", "GROUP", K.DELIVERY_GROUP, "r", "COUNT", 1000, "BLOCK", block_ms,
            "NOACK", "STREAMS", key, ">")


async def start(conn: Any, key: str, after: bytes) -> None:
    """Make the group (and the stream if it is gone) at ``after`` on ``conn``."""
    await conn.send_command("EVAL", START, 1, key, after, K.DELIVERY_TTL, K.DELIVERY_GROUP)
    await conn.read_response()


async def read_one(ahead: Ahead, key: str) -> Any:
    """The answer of the next read in flight on ``ahead``'s connection (more sent first when
    fewer than :data:`LOW` are): the raw reply of ``XREADGROUP``, None when its block ran out.
    Raises ``ResponseError`` when Redis refused it (the caller starts again)."""
    if ahead.pending < LOW:
        more = AHEAD - ahead.pending
        conn = ahead.conn
        await conn.send_packed_command(
            conn.pack_commands([read_args(key, ahead.block_ms)] * more), check_health=False)
        ahead.pending += more
    reply = await ahead.conn.read_response()
    ahead.pending -= 1
    if isinstance(reply, ResponseError):
        raise reply
    return reply



def gone(exc: ResponseError) -> bool:
    """Whether a read was refused because the stream or its group is gone: deleted under a
    waiting read (``UNBLOCKED``), or before it (``NOGROUP``)."""
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))
