"""Redis Cluster hash tags: the part of a key in braces, which decides its slot.

The rules are in sessions/keys.py's docstring (all keys of one session share ``{<session
id>}``; inbound, webhook and Dapr outbox shards are spread evenly over the slots); every key is
named there, and these helpers are re-exported from it.
"""

from __future__ import annotations

import binascii
import itertools
import zlib
from functools import cache

DEFAULT_AGENT = "default"
"""The agent whose inbound shards keep the pre-registry names (sessions/keys.py)."""


def session_tag(session_id: str) -> str:
    return "{" + session_id + "}"


CLUSTER_SLOTS = 16384


def key_slot(tag: str) -> int:
    """The Redis Cluster slot of a hash tag (CRC16-XMODEM, as Redis computes it)."""
    return binascii.crc_hqx(tag.encode(), 0) % CLUSTER_SLOTS


@cache
def shard_tag(k: int, shards: int, agent: str = DEFAULT_AGENT) -> str:
    """The hash tag of inbound shard ``k`` of ``shards`` of ``agent``: ``in.<k>.<salt>`` (the
    ``default`` agent) or ``in.<agent>.<k>.<salt>`` (any other), with the first salt
    whose slot lies near ``(k + 1/2) / shards`` of the slot range (within an eighth of the
    gap between shards, or 8 slots). Evenly spaced slots put N/M ± 1 shards on each of M
    masters that split the slots equally (as ``redis-cli --cluster create`` does); naive tags
    do not spread: ``{0}``..``{31}`` leave half of a 16-master cluster without a shard,
    ``{in.0}``..``{in.31}`` a quarter. Deterministic; changing ``shards`` renames the shards,
    as it re-maps sessions anyway. About 16384/window CRCs per shard, once per process
    (6 ms for 64 shards, 0.4 s for 1024)."""
    return spread_tag("in." if agent == DEFAULT_AGENT else f"in.{agent}.", k, shards)


@cache
def spread_tag(base: str, k: int, shards: int) -> str:
    """``<base><k>.<salt>``: the hash tag of stream ``k`` of ``shards`` spread evenly over the
    slots (see :func:`shard_tag`)."""
    gap = CLUSTER_SLOTS / shards
    width = max(8, int(gap / 8))
    lo = int((k + 0.5) * gap - width / 2) % CLUSTER_SLOTS
    for salt in itertools.count():
        tag = f"{base}{k}.{salt}"
        if (key_slot(tag) - lo) % CLUSTER_SLOTS < width:
            return tag
    raise AssertionError("unreachable")  # itertools.count() never ends


def webhook_tag(k: int, shards: int) -> str:
    """The hash tag of webhook outbox shard ``k`` of ``shards``: ``wh.<k>.<salt>``, spread
    like the inbound shards. Its outbox, retry schedule and dead letters share it."""
    return spread_tag("wh.", k, shards)


def dapr_tag(k: int, shards: int) -> str:
    """The hash tag of Dapr outbox shard ``k`` of ``shards``: ``dapr.<k>.<salt>``."""
    return spread_tag("dapr.", k, shards)


def shard_for(session_id: str, shards: int) -> int:
    """Inbound shard of a session: stable across processes and restarts."""
    return zlib.crc32(session_id.encode()) % shards
