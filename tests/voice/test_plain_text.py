"""The reply's text on its way to the TTS (voice/plain_text.py): plain text at once, markdown
filtered as livekit-agents' ``filter_markdown`` filters it. No room."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest
from livekit.agents.voice.transcription.filters import filter_markdown

from voice import job
from voice.plain_text import TTS_TEXT_TRANSFORMS, plain_at_once
from voice.settings import VoiceSettings

TEXTS = [
    "You said: tell me about the weather in paris tomorrow. I am a demo agent; I can tell time.",
    "You said: **tell me** about the _weather_ in [paris](https://x.example) tomorrow.",
    "- first item\n- second item with `code`\n# A header\n> a quote",
    "The answer is 5 * 3 = 15, and 2 * 4 is 8!",
    "Here it is: ![a map](https://x.example/m.png) and ~~not this~~ that.\n\n---\nDone.",
    "+1 for that. Then * a list\n* item two",
    "Hello! Great to hear from you... Bye!",
]


async def _out(transform: Any, pieces: list[str]) -> str:
    async def source() -> AsyncIterator[str]:
        for p in pieces:
            yield p
    return "".join([x async for x in transform(source())])


def _chunkings(text: str) -> list[list[str]]:
    words = text.split(" ")
    by_word = [words[0], *(" " + w for w in words[1:])]
    return [[text], by_word, [text[i:i + 3] for i in range(0, len(text), 3)],
            [text[i:i + 7] for i in range(0, len(text), 7)]]


@pytest.mark.parametrize("text", TEXTS)
async def test_it_says_what_filter_markdown_says(text: str) -> None:
    for pieces in _chunkings(text):
        assert await _out(plain_at_once, pieces) == await _out(filter_markdown, pieces), pieces


async def _first_out(transform: Any, first: str) -> str:
    """What ``transform`` gives for ``first`` before any more text comes."""
    more: asyncio.Queue[str | None] = asyncio.Queue()
    await more.put(first)

    async def source() -> AsyncIterator[str]:
        while (p := await more.get()) is not None:
            yield p
    got: list[str] = []

    async def read() -> None:
        async for x in transform(source()):
            got.append(x)
    reader = asyncio.create_task(read())
    await asyncio.sleep(0.2)  # the transform has had every chance to pass it on
    before = "".join(got)
    await more.put(None)
    await asyncio.wait_for(reader, 5)
    assert "".join(got) == first
    return before


async def test_the_opening_clause_is_not_held_for_the_next_piece() -> None:
    assert await _first_out(plain_at_once, "You said:") == "You said:"
    # livekit-agents' own filter holds what follows the last space until more text comes:
    # a worker tick later (sessions/coalescer.py)
    assert await _first_out(filter_markdown, "You said:") == "You"
    # markdown still waits for what could complete it
    assert await _first_out(plain_at_once, "You said: **tell") == "You said:"


async def test_the_worker_gives_the_call_these_transforms(monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    monkeypatch.setattr(job, "_speech", lambda _proc, _bridge: (None, None, None))
    proc = SimpleNamespace(userdata={"settings": VoiceSettings()})
    session = job._session(proc, SimpleNamespace(), None)  # type: ignore[arg-type]
    assert session.options.tts_text_transforms == TTS_TEXT_TRANSFORMS
    assert [plain_at_once, "filter_emoji"] == TTS_TEXT_TRANSFORMS
