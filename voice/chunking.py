"""Text for a non-streaming TTS: the first clause of a reply at once, whole sentences after.

livekit-agents feeds a non-streaming TTS (espeak-ng) sentence by sentence, and its sentence
tokenizer holds a sentence until the next one has begun (it needs the context): the first
audio waits for the model's whole first sentence and a few words more. At 60 tokens/s a
twelve-word sentence is ~0.3 s of waiting. :class:`FirstClauseTokenizer` lets the first piece
of each reply go as soon as it ends a clause (``,`` ``;`` ``:`` ``.`` ``!`` ``?`` followed by a
space) after ``min_words`` words, or after ``max_words`` words without one; the rest of the
reply is split into sentences as before (blingfire), which keeps espeak-ng's intonation
whole for everything but the opening clause.
"""

from __future__ import annotations

import functools
import re

from livekit.agents import tokenize
from livekit.agents.tokenize.blingfire import _split_sentences
from livekit.agents.tokenize.token_stream import BufferedSentenceStream
from livekit.agents.tokenize.tokenizer import TokenData

_CLAUSE_END = re.compile(r"[,;:.!?]['\")\]]*\s")
_WORD_END = re.compile(r"\S\s")
_ENDS_CLAUSE = re.compile(r"[^\W\d_][,;:!?]['\")\]]*$")
"""Text that ends with a letter and a clause mark: the clause is over without waiting for the
space after it (one token of the model later). Not after a digit ("1,000", "10:30") and not
``.`` ("Dr.", "3.5"): those may go on."""


def first_cut(text: str, min_words: int, max_words: int) -> int:
    """Where the first piece of ``text`` ends (an index into it), 0 while it cannot end yet.

    A piece ends at the first clause end after ``min_words`` words, or after ``max_words``
    words; once the space after it has arrived (the model may still be in a word), or at
    once when the text so far ends with a letter and ``, ; : ! ?`` (:data:`_ENDS_CLAUSE`).
    """
    words = 0
    for words, m in enumerate(_WORD_END.finditer(text), start=1):
        end = m.start() + 1
        if words >= max_words:
            return end
        if words >= min_words and _CLAUSE_END.match(text, _clause_start(text, end)):
            return end
    if words + 1 >= min_words and _ENDS_CLAUSE.search(text):
        return len(text)
    return 0


def _clause_start(text: str, end: int) -> int:
    """The index of the punctuation run that ends the word before ``end`` (or ``end``)."""
    i = end
    while i > 0 and text[i - 1] in ",;:.!?'\")]":
        i -= 1
    return i if i < end else end


class FirstClauseStream(BufferedSentenceStream):
    """A sentence stream whose first token per segment is the opening clause."""

    def __init__(self, min_words: int, max_words: int) -> None:
        # blingfire's defaults (SentenceTokenizer(retain_format=True).stream())
        super().__init__(tokenizer=functools.partial(_split_sentences, min_sentence_len=20,
                                                     retain_format=True),
                         min_token_len=20, min_ctx_len=10)
        self._min_words, self._max_words = min_words, max_words
        self._head: str | None = ""
        """Text of this segment's opening piece so far; None once it went."""

    def push_text(self, text: str) -> None:
        if self._head is None:
            super().push_text(text)
            return
        self._check_not_closed()
        self._head += text
        cut = first_cut(self._head, self._min_words, self._max_words)
        if cut:
            first, rest = self._head[:cut], self._head[cut:]
            self._head = None
            if first.strip():
                self._event_ch.send_nowait(
                    TokenData(token=first, segment_id=self._current_segment_id))
            super().push_text(rest.lstrip())

    def flush(self) -> None:
        if self._head:
            super().push_text(self._head)
        self._head = ""  # the next segment (reply) starts with its own opening piece
        super().flush()


class FirstClauseTokenizer(tokenize.SentenceTokenizer):
    """blingfire's sentences, but each reply's opening clause on its own (see module doc)."""

    def __init__(self, min_words: int = 2, max_words: int = 6) -> None:
        if not 1 <= min_words <= max_words:
            raise ValueError("need 1 <= min_words <= max_words")
        self.min_words, self.max_words = min_words, max_words
        self._sentences = tokenize.blingfire.SentenceTokenizer(retain_format=True)

    def tokenize(self, text: str, *, language: str | None = None) -> list[str]:
        cut = first_cut(text, self.min_words, self.max_words)
        if not cut:
            return self._sentences.tokenize(text)
        return [text[:cut], *self._sentences.tokenize(text[cut:].lstrip())]

    def stream(self, *, language: str | None = None) -> FirstClauseStream:
        return FirstClauseStream(self.min_words, self.max_words)
