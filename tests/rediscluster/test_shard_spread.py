"""Inbound shard tags spread over the masters of a Cluster (no I/O: slots are CRC16)."""

from __future__ import annotations

from collections import Counter

import pytest

from sessions.keys import CLUSTER_SLOTS, Keys, key_slot, shard_tag


def equal_split(masters: int) -> list[tuple[int, int]]:
    """Slot ranges per master as ``redis-cli --cluster create`` assigns them."""
    per, first, cursor, out = CLUSTER_SLOTS / masters, 0, 0.0, []
    for i in range(masters):
        last = round(cursor + per - 1)
        if last > CLUSTER_SLOTS - 1 or i == masters - 1:
            last = CLUSTER_SLOTS - 1
        out.append((first, last))
        first, cursor = last + 1, cursor + per
    return out


def per_master(slots: list[int], masters: int) -> list[int]:
    ranges = equal_split(masters)
    counts = Counter(next(i for i, (a, b) in enumerate(ranges) if a <= s <= b) for s in slots)
    return [counts[i] for i in range(masters)]


def test_redis_cli_split_matches_a_real_three_master_cluster() -> None:
    assert equal_split(3) == [(0, 5460), (5461, 10922), (10923, 16383)]


def test_key_slot_is_redis_crc16() -> None:
    # the examples of the CLUSTER KEYSLOT documentation, and CRC16-XMODEM's check value
    assert key_slot("somekey") == 11058
    assert key_slot("hash_tag") == 2515  # of "foo{hash_tag}"
    assert key_slot("123456789") == 0x31C3


@pytest.mark.parametrize("masters", [3, 16])
@pytest.mark.parametrize("shards", [*range(1, 65), 100, 128, 256])
def test_shards_spread_evenly(shards: int, masters: int) -> None:
    counts = per_master([key_slot(shard_tag(k, shards)) for k in range(shards)], masters)
    assert max(counts) - min(counts) <= 1, counts
    assert sum(counts) == shards


def test_naive_tags_leave_masters_idle() -> None:
    """Why the tags are searched for: short sequential tags hash into clumps."""
    naive = per_master([key_slot(str(k)) for k in range(32)], 16)
    assert naive.count(0) == 8
    prefixed = per_master([key_slot(f"in.{k}") for k in range(32)], 16)
    assert prefixed.count(0) == 4
    ours = per_master([key_slot(shard_tag(k, 32)) for k in range(32)], 16)
    assert ours == [2] * 16


def test_tags_are_deterministic_and_distinct() -> None:
    tags = [shard_tag(k, 8) for k in range(8)]
    assert tags == [shard_tag(k, 8) for k in range(8)]
    assert len(set(tags)) == 8 and all(t.startswith(f"in.{k}.") for k, t in enumerate(tags))
    keys = Keys("p", 8)
    assert keys.inbound(3) == "p:{" + tags[3] + "}:in"
    assert keys.dead_letters(3) == "p:{" + tags[3] + "}:dlq"
