"""The text of a read of plain text events, taken from the bytes without decoding the JSON
around it (:class:`TextTemplate`), for the lean model's tap (sessions/lean_model.py).

The events of one streamed reply's text are alike byte for byte but for their text: with
OpenAI's Chat Completions (and compatible servers) ``data: {"id":"chatcmpl-…",…,"choices":
[{"index":0,"delta":{"content":"`` + the text + ``"},"finish_reason":null}]}`` and a blank
line. The template is learned from one such event that ``orjson`` decoded (and checked: the
same bytes with another text decode to the same event with that text). A read of whole events
that all match it is then ``head + t1 + sep + t2 + … + tail``: its text is the read without
them (one ``replace``), one C pass to see that no piece holds a quote, a backslash, a control
character or a non-ASCII byte, and one ``decode``; per event no line, no dict, no ``str``.
A piece with any of those is decoded as the JSON string it is (``orjson``: every escape,
surrogate pairs, strict UTF-8); a piece that is not a valid JSON string, or a read that is
not only whole matching events, is left to the usual decoding (:class:`lean_chunks.
SSEDecoder`), so the text is exactly ``orjson``'s whatever the bytes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_PLAIN = re.compile(rb'[\x00-\x1f"\\\x7f-\xff]')
"""A byte a piece of text may not hold to be taken as it is (anything else: ``orjson``)."""
_KEY = re.compile(rb'"content"[ \t\r\n]*:[ \t\r\n]*"')
_PROBE = "Z"


class TextTemplate:
    """The bytes around the text of one reply's plain text events (module docstring)."""

    __slots__ = ("_bare", "head", "sep", "tail")

    def __init__(self, head: bytes, tail: bytes, bare: bytes) -> None:
        self.head = b"data: " + head
        self.tail = tail + b"\n\n"
        self.sep = self.tail + self.head
        self._bare = bare

    @classmethod
    def learn(cls, data: bytes, body: dict[str, Any]) -> TextTemplate | None:
        """The template of ``data`` (one event's JSON, ``body`` as decoded, a text-only
        chunk: sessions/lean_chunks.py ``text_only``), or None when its text cannot be told
        from the bytes around it."""
        content = body["choices"][0]["delta"]["content"]
        for key in _KEY.finditer(data):
            start = key.end()
            end = _string_end(data, start)
            if end < 0:
                return None
            head, tail = data[:start], data[end:]
            try:
                probe = orjson.loads(head + _PROBE.encode() + tail)
                delta = probe["choices"][0]["delta"]
                if delta.get("content") != _PROBE:
                    continue
                delta["content"] = content
            except (orjson.JSONDecodeError, LookupError, TypeError, AttributeError):
                continue
            if probe == body:
                return cls(head, tail, head + tail)
        return None

    def text(self, read: bytes) -> str | None:
        """The text of ``read`` if it is only whole events of this template, else None."""
        head, tail = self.head, self.tail
        if not read.startswith(head) or not read.endswith(tail) \
                or len(read) < len(head) + len(tail):
            return None
        inner = read[len(head):len(read) - len(tail)]
        joined = inner.replace(self.sep, b"")
        if _PLAIN.search(joined) is None:
            return joined.decode("ascii")
        return _careful(inner.split(self.sep))

    def body(self) -> dict[str, Any]:
        """A fresh chunk of this template (its text empty)."""
        body: dict[str, Any] = orjson.loads(self._bare)
        return body


def _careful(pieces: list[bytes]) -> str | None:
    """The text of ``pieces`` (each a JSON string's inside), or None if one is not one."""
    out = []
    for piece in pieces:
        if _PLAIN.search(piece) is None:
            out.append(piece.decode("ascii"))
            continue
        try:
            text = orjson.loads(b'"' + piece + b'"')
        except orjson.JSONDecodeError:
            return None
        out.append(text)
    return "".join(out)


def _string_end(data: bytes, start: int) -> int:
    """Where the JSON string whose inside begins at ``start`` ends (its closing quote), or
    -1."""
    pos = start
    while True:
        quote = data.find(b'"', pos)
        if quote < 0:
            return -1
        slashes = 0
        while data[quote - 1 - slashes] == 92:  # a backslash
            slashes += 1
        if slashes % 2 == 0:
            return quote
        pos = quote + 1
