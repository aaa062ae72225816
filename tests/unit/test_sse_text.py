"""The text of plain text events taken from their bytes (sessions/sse_text.py): exactly
``orjson``'s text whatever the escapes and encoders, or None (the usual decoding then); and
through the lean model's tap, the reply's text exactly once with the fast path taken."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from agents import ModelSettings
from agents.models.interface import ModelTracing
from hypothesis import given, settings
from hypothesis import strategies as st

from sessions import lean_chunks, sse_text
from sessions.lean_chunks import SSEDecoder, TextSplit
from sessions.lean_model import LeanChatModel
from sessions.sse_text import TextTemplate
from tests.unit.test_lean_model import DONE, USAGE, sse
from tests.unit.test_lean_tap import Tap, clients

Encode = Callable[[dict[str, Any]], bytes]
ENCODERS: dict[str, Encode] = {
    "orjson": orjson.dumps,
    "json ascii": lambda b: json.dumps(b).encode(),
    "json utf-8 compact": lambda b: json.dumps(b, ensure_ascii=False,
                                               separators=(",", ":")).encode(),
    "content last, spaced": lambda b: json.dumps(
        {**b, "choices": [{"finish_reason": None, "index": 0, **b["choices"][0]}]},
        indent=1).replace("\n", " ").encode(),
}


def body(text: str, created: int = 0) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": created,
            "model": "m", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}


def event(encode: Encode, text: str, created: int = 0) -> bytes:
    return b"data: " + encode(body(text, created)) + b"\n\n"


def learned(encode: Encode, text: str = "x") -> TextTemplate:
    data = encode(body(text))
    template = TextTemplate.learn(data, orjson.loads(data))
    assert template is not None
    return template


TEXTS = st.lists(st.text(st.characters(exclude_categories=["Cs"])), min_size=1, max_size=8)


@pytest.mark.parametrize("name", list(ENCODERS))
@settings(max_examples=150, deadline=None)
@given(texts=TEXTS, seed=st.text(st.characters(exclude_categories=["Cs"]), max_size=4))
def test_the_text_of_a_read_is_the_events_text(name: str, texts: list[str], seed: str) -> None:
    encode = ENCODERS[name]
    read = b"".join(event(encode, t) for t in texts)
    assert learned(encode, seed).text(read) == "".join(texts)


PIECES = st.lists(st.binary(max_size=12) | st.lists(st.sampled_from(
    [b"a", b" ", b'"', b"\\", b"\\n", b'\\"', b"\\u00e9", b"\\ud83d", b"\\ude00", b"\\u",
     b"\n", b"\r", b"\x00", b"\x7f", "é".encode(), b"\xc3", b"\xff", b"\\/", b"\\x"]),
    max_size=6).map(b"".join), min_size=1, max_size=4)


@settings(max_examples=600, deadline=None)
@given(pieces=PIECES)
def test_any_bytes_give_orjsons_text_or_none(pieces: list[bytes]) -> None:
    """Whatever sits where the text goes, the text is orjson's of every event, or None."""
    template = learned(orjson.dumps)
    head, tail = template.head, template.tail
    read = b"".join(head + p + tail for p in pieces)
    got = template.text(read)
    if got is None:
        return
    texts = []
    for p in pieces:
        decoded = orjson.loads((head + p + tail)[6:])
        assert decoded == body(decoded["choices"][0]["delta"]["content"])
        texts.append(decoded["choices"][0]["delta"]["content"])
    assert got == "".join(texts)


def test_escapes_and_pairs_are_exact() -> None:
    template = learned(lambda b: json.dumps(b).encode())
    read = (template.head + b'a\\n\\"b\\\\' + template.sep + b"\\ud83d\\ude00 \\u00e9"
            + template.sep + b"\\/" + template.tail)
    assert template.text(read) == 'a\n"b\\\U0001f600 é/'
    # a pair split across two events: each half as orjson takes it alone, or no text at all
    halves = (b"\\ud83d", b"\\ude00")
    lone = template.head + halves[0] + template.sep + halves[1] + template.tail
    expected = "".join(orjson.loads(b'"%s"' % p) for p in halves) \
        if all(_orjson_takes(p) for p in halves) else None
    assert template.text(lone) == expected


def _orjson_takes(piece: bytes) -> bool:
    try:
        orjson.loads(b'"' + piece + b'"')
    except orjson.JSONDecodeError:
        return False
    return True


@pytest.mark.parametrize("read", [
    b"", b"data: [DONE]\n\n",
    event(orjson.dumps, "a") + DONE,                      # not only text events
    event(orjson.dumps, "a")[:-1],                        # the last event not whole
    event(orjson.dumps, "a").replace(b"\n\n", b"\r\n\r\n"),
    event(orjson.dumps, "a", created=1),                  # other bytes around the text
    event(orjson.dumps, "a") + b": keep-alive\n\n",
    b"data: " + orjson.dumps(body("a")) + b"\n" + b"data: x\n\n",
])
def test_anything_else_is_left_to_the_usual_decoding(read: bytes) -> None:
    assert learned(orjson.dumps).text(read) is None


def test_no_template_where_the_text_cannot_be_told() -> None:
    doubled = b'{"choices":[{"delta":{"content":"a","content":"b"}}]}'
    found = TextTemplate.learn(doubled, orjson.loads(doubled))
    assert found is not None and found.text(found.head + b"q" + found.tail) == "q"
    assert found.head.endswith(b'"content":"a","content":"'), "the key orjson keeps"


def test_the_decoder_learns_and_relearns_bounded() -> None:
    d = SSEDecoder()
    assert d.feed_text(event(orjson.dumps, "a")) is None, "nothing learned yet"
    assert d.feed(event(orjson.dumps, "a"))[0]["choices"][0]["delta"]["content"] == "a"
    assert d.feed_text(event(orjson.dumps, "b") + event(orjson.dumps, "c")) == "bc"
    d.feed(event(orjson.dumps, "d", created=2))  # the server changed its bytes: learned anew
    assert d.feed_text(event(orjson.dumps, "e", created=2)) == "e"
    d.feed(event(orjson.dumps, "f")[:10])
    assert d.feed_text(event(orjson.dumps, "g", created=2)) is None, "a line is open"
    assert d.feed(event(orjson.dumps, "f")[10:])[0]["choices"][0]["delta"]["content"] == "f"
    for n in range(lean_chunks.MAX_LEARNS + 2):
        d.feed(event(orjson.dumps, "h", created=10 + n))
    assert d.feed_text(event(orjson.dumps, "i", created=11 + lean_chunks.MAX_LEARNS)) is None


def test_the_catch_up_chunk_of_fast_text_is_the_templates() -> None:
    split, d = TextSplit(), SSEDecoder()
    split.split(d.feed(event(orjson.dumps, "a")))  # opens the text part, learns
    assert split.skipping and d.template is not None
    split.text("bc", d.template)
    caught = split.catch_up()
    assert caught == body("bc") and split.catch_up() is None


OPENING = sse({"role": "assistant", "content": ""})
WORDS = ["Hel", "lo\n", ' "wide"', " wörld", " \U0001f600", "\\", "!"]


@pytest.mark.parametrize("name", list(ENCODERS))
@pytest.mark.parametrize("per_read", [1, 2])
async def test_the_tap_gives_the_reply_once_through_the_fast_path(
        name: str, per_read: int, monkeypatch: pytest.MonkeyPatch) -> None:
    encode = ENCODERS[name]
    events = [event(encode, w) for w in WORDS]
    reads = [OPENING] + [b"".join(events[i:i + per_read])
                         for i in range(0, len(events), per_read)]
    reads += [sse({}, "stop"), sse(usage=USAGE), DONE]
    fast: list[str] = []
    real = TextTemplate.text

    def counted(self: TextTemplate, read: bytes) -> str | None:
        text = real(self, read)
        if text is not None:
            fast.append(text)
        return text
    monkeypatch.setattr(sse_text.TextTemplate, "text", counted)
    model = LeanChatModel("m", clients(reads))
    got: list[Any] = []
    model.tap = Tap(got)
    async for e in model.stream_response(None, "hi", ModelSettings(), [], None, [],
                                         ModelTracing.DISABLED):
        got.append(e.model_dump())
    given, skip = [], False
    for e in got:
        if isinstance(e, tuple):
            if e[0] == "text":
                given.append(e[1])
            skip = e[0] == "caught_up"
        elif e["type"] == "response.output_text.delta":
            if not skip:
                given.append(e["delta"])
            skip = False
    assert "".join(given) == "".join(WORDS)
    assert got[-1]["response"]["output"][0]["content"][0]["text"] == "".join(WORDS)
    assert len(fast) >= len(reads) - 6, "every read of text after the first took the template"
