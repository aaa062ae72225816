"""Unit tests for sessions/keys.py: Redis Cluster hash tags, shards, prefixes."""

from __future__ import annotations

import random
import string
import zlib
from collections import Counter
from collections.abc import Callable

import pytest

from sessions.keys import SESSION_ID_RE, Keys, key_slot, session_tag, shard_for


def hash_tag(key: str) -> str:
    """The part of a key Redis Cluster hashes: between the first '{' and the next '}'."""
    start = key.find("{")
    if start == -1:
        return key
    end = key.find("}", start + 1)
    if end == -1 or end == start + 1:
        return key
    return key[start + 1:end]


K = Keys()


def per_session(keys: Keys) -> list[Callable[[str], str]]:
    return [keys.meta, keys.log, keys.turns, keys.client_ids, keys.nodes, keys.lock,
            keys.memory]


def test_hash_tag_helper() -> None:
    assert hash_tag("a:{x}:b") == "x"
    assert hash_tag("a:{}:{y}") == "a:{}:{y}"
    assert hash_tag("plain") == "plain"


@pytest.mark.parametrize("sid", ["s1", "user-42.chat:7", "A_b", "x" * 64])
def test_per_session_keys_share_one_tag(sid: str) -> None:
    keys = [make(sid) for make in per_session(K)]
    assert len(set(keys)) == len(keys), "every per-session key must be distinct"
    assert {hash_tag(k) for k in keys} == {sid}


def test_session_tag() -> None:
    assert session_tag("abc") == "{abc}"


def test_different_sessions_different_tags() -> None:
    for make in per_session(K):
        assert hash_tag(make("s1")) != hash_tag(make("s2"))
        assert make("s1") != make("s2")


def test_inbound_shards_have_distinct_tags() -> None:
    tags = [hash_tag(K.inbound(i)) for i in range(16)]
    assert len(set(tags)) == 16
    for i in range(16):
        assert hash_tag(K.dead_letters(i)) == hash_tag(K.inbound(i))
        assert K.dead_letters(i) != K.inbound(i)


def test_inbound_tag_differs_from_session_tags() -> None:
    assert hash_tag(K.inbound(0)) != hash_tag(K.meta("0"))


def test_node_keys_share_tag_per_node() -> None:
    assert hash_tag(K.delivery("n1")) == hash_tag(K.node_alive("n1"))
    assert hash_tag(K.delivery("n1")) != hash_tag(K.delivery("n2"))


@pytest.mark.parametrize("prefix", ["agentia", "t1234abcd", "my.app"])
def test_prefix_is_applied(prefix: str) -> None:
    keys = Keys(prefix)
    made = [make("s1") for make in per_session(keys)]
    made += [keys.inbound(3), keys.dead_letters(3), keys.delivery("n"), keys.node_alive("n"),
             keys.nodes_alive(), keys.workers_alive(), keys.cancel_channel(),
             keys.user_sessions("alice")]
    for key in made:
        assert key.startswith(prefix + ":"), key
    assert Keys("a").meta("s") != Keys("b").meta("s")
    assert hash_tag(Keys("a").meta("s")) == hash_tag(Keys("b").meta("s")) == "s"


def test_default_prefix() -> None:
    assert Keys().meta("s").startswith("agentia:")


def test_shard_for_stable_and_in_range() -> None:
    for n in (1, 2, 8, 13, 1024):
        for sid in ("a", "s1", "user-42", "x" * 64):
            shard = shard_for(sid, n)
            assert 0 <= shard < n
            assert shard_for(sid, n) == shard
    # stable across processes: defined by CRC-32, not Python's salted hash()
    assert shard_for("s1", 8) == zlib.crc32(b"s1") % 8
    assert shard_for("hello", 1000) == 907060870 % 1000


def test_shard_for_spreads_evenly() -> None:
    rng = random.Random(1234)
    alphabet = string.ascii_letters + string.digits + "_.:-"
    shards, n = 8, 10_000
    counts = Counter(
        shard_for("".join(rng.choices(alphabet, k=rng.randint(8, 32))), shards)
        for _ in range(n))
    assert set(counts) == set(range(shards))
    mean = n / shards
    for shard, count in counts.items():
        assert 0.8 * mean <= count <= 1.2 * mean, (shard, count)


@pytest.mark.parametrize("sid", ["a", "s1", "user-42.chat:7", "A_b-c.d:e", "x" * 64, "0"])
def test_session_id_re_accepts(sid: str) -> None:
    assert SESSION_ID_RE.fullmatch(sid)


@pytest.mark.parametrize("sid", ["", "x" * 65, "a b", "a{b}", "{s}", "a}", "a/b", "é",
                                 "a\nb", "\ns1", "a*", "a?"])
def test_session_id_re_rejects(sid: str) -> None:
    assert SESSION_ID_RE.fullmatch(sid) is None


@pytest.mark.parametrize("sid", ["s1\n", "x" * 64 + "\n"])
def test_session_id_re_rejects_trailing_newline(sid: str) -> None:
    assert SESSION_ID_RE.fullmatch(sid) is None


def test_each_agent_has_its_own_shards_and_default_keeps_the_old_names() -> None:
    k = Keys("p", 8)
    old = [k.inbound(i) for i in range(8)]
    assert old == [k.inbound(i, "default") for i in range(8)] == [k.inbound(i, "")
                                                                   for i in range(8)]
    assert all(hash_tag(s).startswith("in.") and hash_tag(s).count(".") == 2 for s in old)
    demo = [k.inbound(i, "demo") for i in range(8)]
    triage = [k.inbound(i, "triage") for i in range(8)]
    assert all(hash_tag(s).startswith("in.demo.") for s in demo)
    assert len({hash_tag(s) for s in old + demo + triage}) == 24
    for agent, streams in (("demo", demo), ("triage", triage)):
        for i, s in enumerate(streams):
            dlq = k.dead_letters(i, agent)
            assert hash_tag(dlq) == hash_tag(s) and dlq != s
            # spread like the default agent's: shard i lies in the i-th eighth of the slots
            assert i * 2048 <= key_slot(hash_tag(s)) < (i + 1) * 2048
    assert k.agents() == "p:agents"
