"""The reply's text on its way to the TTS: plain text goes at once, markdown is filtered.

livekit-agents' default TTS text transforms (``filter_markdown``, ``filter_emoji``) hold the
end of every piece of text after its last space or ``, . ? ! ;`` until more text comes (the word
could still be part of ``**bold**`` or a link): a reply's opening clause "You said:" reached
the TTS only with the next piece of text, one tick of the agent worker later (40 ms,
sessions/coalescer.py), and the first clause (voice/chunking.py) waited for it.
:func:`plain_at_once` passes text with no markdown character on at once and hands everything
from the first one on to ``filter_markdown``, so the markdown a model writes is still
filtered, the same way.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator

from livekit.agents.voice.transcription.filters import filter_markdown
from livekit.agents.voice.transcription.text_transforms import TextTransforms

MARKUP = re.compile(r"[*_`~\[#>\n]|!$")
"""A character some markdown pattern starts or needs (livekit-agents' ``filters.py``:
emphasis, code, strike-through, links and images, headers, quotes, lines); ``!`` only where
an image's ``[`` may follow in the next piece."""
LINE_START = re.compile(r"\s*[-+]|\s*$")
"""The reply's first piece could open a list item or a rule, or tells nothing yet."""
NOT_LINE_START = "\u2060"
"""A word joiner (no width, not a space, not a word character) put before the text handed
over mid-line, so that ``filter_markdown``'s line-start patterns ("* ", "- ", "# ", "> ") do
not take the middle of a line for its start ("5 * 3"); taken out of its output again."""


async def plain_at_once(text: AsyncIterable[str]) -> AsyncIterator[str]:
    """``text`` on at once while it holds no markdown character, then through
    ``filter_markdown`` (from the piece that holds the first one)."""
    pieces = aiter(text)
    first = True
    async for piece in pieces:
        if (first and LINE_START.match(piece)) or MARKUP.search(piece):
            start = piece if first else NOT_LINE_START + piece
            async for out in filter_markdown(_then(start, pieces)):
                yield out.replace(NOT_LINE_START, "")
            return
        first = False
        yield piece


async def _then(head: str, rest: AsyncIterator[str]) -> AsyncIterator[str]:
    yield head
    async for piece in rest:
        yield piece


TTS_TEXT_TRANSFORMS: list[TextTransforms] = [plain_at_once, "filter_emoji"]
"""The call's ``tts_text_transforms`` (livekit-agents' default is ``["filter_markdown",
"filter_emoji"]``)."""
