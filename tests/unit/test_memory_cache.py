"""The worker's memory cache on its own (sessions/memory_cache.py); against Redis:
tests/integration/test_memory_cache.py."""

from __future__ import annotations

import pytest

from sessions import keys as K
from sessions.memory_cache import MemoryCache


def raw(*texts: str) -> list[bytes]:
    return [b'1|{"role":"user","content":"%s"}' % t.encode() for t in texts]


def test_an_ending_extends_only_the_entry_its_start_used() -> None:
    """A later START of the session in the same process (it read the memory with this
    ending's items in already) replaced the entry: the ending must not add them twice."""
    c = MemoryCache()
    c.loaded("s", b"e:1:1", raw("a"), None)
    c.started("s", 7, "w", b"e:1:1")
    c.loaded("s", b"e:2:2", raw("a", "b"), None)  # the next turn's START, after the ending
    c.wrote("s", 7, "w", raw("b"))
    entry = c.get("s")
    assert entry is not None and entry.version() == b"e:2:2"
    assert [i["content"] for i in entry.items] == ["a", "b"]


def test_an_ending_extends_its_entry_with_the_version_it_made() -> None:
    c = MemoryCache()
    c.loaded("s", b"e:4:1", raw("a"), None)
    c.started("s", 7, "w", b"e:4:1")
    c.wrote("s", 7, "w", raw("b", "c"))
    entry = c.get("s")
    assert entry is not None and entry.version() == b"e:5:3"
    c.wrote("s", 7, "w", raw("d"))  # its base is used up: once only
    assert c.get("s") == entry
    held = c.get("s")
    assert c.loaded("s", b"e:5:3", None, held) == entry.items and c.hits == 1


def test_the_items_held_are_bounded_least_recently_used_first() -> None:
    c = MemoryCache(max_items=5)
    c.loaded("a", b"e:1:2", raw("1", "2"), None)
    c.loaded("b", b"e:1:2", raw("1", "2"), None)
    c.loaded("a", b"e:1:2", None, c.get("a"))  # used again: b is the oldest now
    c.loaded("c", b"e:1:2", raw("1", "2"), None)
    assert c.get("b") is None and c.get("a") is not None and c.get("c") is not None
    c.loaded("d", b"e:1:6", raw(*"123456"), None)  # more than all: not kept
    assert c.get("d") is None and c.get("a") is not None


def test_the_count_of_items_known_plain_follows_the_trim(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(K, "MEMORY_MAXLEN", 4)
    c = MemoryCache()
    items = c.loaded("s", b"e:1:3", raw("a", "b", "c"), None)
    items.plain = 3  # as sessions/memory.py counts them
    c.started("s", 7, "w", b"e:1:3")
    c.wrote("s", 7, "w", raw("d", "e"))  # "a" trimmed
    entry = c.get("s")
    assert entry is not None and [i["content"] for i in entry.items] == ["b", "c", "d", "e"]
    assert entry.items.plain == 2  # "b" and "c"; the new ones not looked at yet
    assert [i["content"] for i in items] == ["a", "b", "c"] and items.plain == 3  # unchanged


def test_an_ending_leaves_the_items_a_turn_read_as_they_were() -> None:
    """The entry an ending extends is a new list: the old one may still be a turn's read."""
    c = MemoryCache()
    items = c.loaded("s", b"e:1:2", raw("a", "b"), None)
    items.plain = 2
    c.started("s", 7, "w", b"e:1:2")
    c.wrote("s", 7, "w", raw("c"))
    entry = c.get("s")
    assert entry is not None and entry.items is not items
    assert [i["content"] for i in entry.items] == ["a", "b", "c"] and entry.items.plain == 2
    assert [i["content"] for i in items] == ["a", "b"] and items.plain == 2


def test_items_are_decoded_together_as_each_alone() -> None:
    """:func:`decode_all` (one ``orjson.loads`` of the items joined) gives what decoding each
    gives, and a stored item that is not one JSON value still raises, not two items."""
    import orjson

    from sessions.memory_cache import decode, decode_all

    raws = [b"%d|%s" % (n, orjson.dumps(i)) for n, i in enumerate(
        [{"role": "user", "content": "a|b, [c]"}, {"type": "function_call", "arguments": "{}"},
         "text", 1.5, None, [1, {"x": []}]])]
    assert decode_all(raws) == [decode(r) for r in raws] and decode_all([]) == []
    with pytest.raises(orjson.JSONDecodeError):
        decode_all([raws[0], b"7|1,2"])
    with pytest.raises(orjson.JSONDecodeError):
        decode_all([b"no bar"])
