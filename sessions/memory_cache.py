"""The decoded memory of the sessions a worker runs, checked against Redis on every turn.

A session keeps up to ``MEMORY_MAXLEN`` (200) items; at 1,000 short turns/s every turn read,
decoded and copied all of them (``START``'s reply, :class:`sessions.memory.RedisMemory`):
~0.2 ms of a worker's ~1.1 ms a turn, growing with the conversation (issue 13, session 17).
Here a worker keeps the items it last saw of a session, decoded, with the memory's
**version** as ``START`` reported it: ``<epoch>:<mv>:<length>``, where ``mv`` (a field of
the session's meta) is raised by every script that changes the memory list
(sessions/scripts.py ``_MEM_CHANGED``) and ``epoch`` is the session's (a session made anew
starts its count again under another epoch). ``START`` gets the version the worker holds and
answers "unchanged" instead of the items when it is the memory's: no item read, sent or
decoded. Any worker may run a session's next turn; a version that differs (another worker
wrote, a ``pop_item``, a rollback, the key expired: the length) is a full read, as before.

A turn's own ending (``APPEND``) writes its items on top of what its ``START`` saw: when
the ending is known written (its script answered), the cache takes the same items with the
version that write made (``mv`` + 1, the length trimmed as ``APPEND`` trims). If anything
else wrote in between, Redis's ``mv`` is past that one, and since ``mv`` never goes back the
prediction never matches a later ``START``: a wasted entry, never a wrong read. The
prediction is made only on the entry this attempt's ``START`` used (:meth:`started`), so a
later ``START`` of the same session in the same process cannot be extended twice.

The items handed out are shared with the cache: read only. The Agents SDK's input
preparation and sessions/sdk_history.py copy each item before changing it (``dict(item)``);
the nested values (a message's content parts) were already shared between the memory's read
and the model's input within a turn. A model that declares it only reads its input (the demo
model, ``reads_input_only``: sessions/sdk_history.py ``reads_only``) is given the cached items
themselves (issue 13, session 18).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import orjson

from sessions import keys as K

CACHED_ITEMS = 50_000
"""Decoded items a worker keeps in all (~1 KiB each for a short demo exchange): 250 sessions
of 200 items; the sessions least recently used are forgotten first."""

_STARTS_KEPT = 10_000
"""Attempts whose base version is remembered until their ending (an attempt that fails
never ends: the oldest are forgotten)."""


class Items(list[Any]):
    """An entry's decoded items; ``plain``: how many of the first are known to be plain
    messages (sessions/sdk_history.py ``plain``: worked out and kept here by the memory that
    reads them, sessions/memory.py; this module does not load the Agents SDK)."""

    __slots__ = ("plain",)

    def __init__(self, items: Any = (), plain: int = 0) -> None:
        super().__init__(items)
        self.plain = plain


class KnownPlain(list[Any]):
    """A memory read (``get_items``) of which every item is known to be a plain message:
    sessions/sdk_history.py does not look at each again."""


class Entry(NamedTuple):
    epoch: bytes
    mv: int
    items: Items
    """Decoded, oldest first; their number is the memory's length."""

    def version(self) -> bytes:
        return b"%s:%d:%d" % (self.epoch, self.mv, len(self.items))


def decode(raw: bytes) -> Any:
    """A stored item (``<turn>|<json>``) as the SDK's item."""
    return orjson.loads(raw.partition(b"|")[2])


def decode_all(raws: list[bytes]) -> list[Any]:
    """Stored items decoded in one ``orjson.loads`` of them joined as a JSON array: half the
    time of one call each (200 short items: ~75 against ~145 µs; a miss of a full memory, issue
    13, session 18). Each is one JSON value as ``orjson.dumps`` wrote it; should one not be (a
    corrupt entry: ``1,2`` would make two), the count differs and each is decoded alone, which
    raises as :func:`decode` does."""
    if not raws:
        return []
    items = orjson.loads(b"[%s]" % b",".join([r.partition(b"|")[2] for r in raws]))
    return items if len(items) == len(raws) else [decode(r) for r in raws]


def parse_version(version: bytes) -> tuple[bytes, int]:
    epoch, mv, _ = version.rsplit(b":", 2)
    return epoch, int(mv)


class MemoryCache:
    """Session id -> :class:`Entry`, least recently used first, at most ``max_items`` items
    in all."""

    def __init__(self, max_items: int = CACHED_ITEMS) -> None:
        self.max_items = max_items
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._held = 0
        self._starts: OrderedDict[tuple[str, int, str], bytes] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, sid: str) -> Entry | None:
        return self._entries.get(sid)

    def loaded(self, sid: str, version: bytes, raw: list[bytes] | None,
               held: Entry | None) -> list[Any]:
        """The items of ``sid`` at ``version``: ``raw`` as ``START`` read them, or, when it
        found the memory unchanged (``raw`` None), those of ``held``, the entry whose version
        the caller sent (kept by the caller: another attempt may have replaced it since)."""
        if raw is None:
            assert held is not None and held.version() == version, (held, version)
            entry = held
            self.hits += 1
        else:
            epoch, mv = parse_version(version)
            entry = Entry(epoch, mv, Items(decode_all(raw)))
            self.misses += 1
        self._put(sid, entry)
        return entry.items

    def started(self, sid: str, turn: int, owner: str, version: bytes) -> None:
        """An attempt of ``turn`` by ``owner`` began on the memory at ``version``."""
        self._starts[(sid, turn, owner)] = version
        if len(self._starts) > _STARTS_KEPT:
            self._starts.popitem(last=False)

    def wrote(self, sid: str, turn: int, owner: str, added: list[bytes]) -> None:
        """The ending of that attempt is written, with ``added`` (stored form) appended to the
        memory: the entry its ``START`` used, if still held, takes them."""
        base = self._starts.pop((sid, turn, owner), None)
        entry = self._entries.get(sid)
        if base is None or entry is None or entry.version() != base:
            return
        if not added:
            return
        # trimmed as APPEND trims (its ARGV: ``MEMORY_MAXLEN``, read when it is sent). One
        # copy of the old items (a turn may still hold them), extended and trimmed in place:
        # three copies were ~3 % of a burst worker's samples at 94 items (session 19)
        old = entry.items
        items = Items(old)
        items += decode_all(added)
        trimmed = max(0, len(items) - K.MEMORY_MAXLEN)
        del items[:trimmed]
        items.plain = max(0, min(old.plain, len(old)) - trimmed)
        self._put(sid, Entry(entry.epoch, entry.mv + 1, items))

    def drop(self, sid: str) -> None:
        entry = self._entries.pop(sid, None)
        if entry is not None:
            self._held -= len(entry.items)

    def _put(self, sid: str, entry: Entry) -> None:
        self.drop(sid)
        if len(entry.items) > self.max_items:
            return
        self._entries[sid] = entry
        self._held += len(entry.items)
        while self._held > self.max_items:
            _, old = self._entries.popitem(last=False)
            self._held -= len(old.items)
