"""The caller's turn ends sooner when its transcript sounds finished (``sentence`` turn detection).

With a fast recogniser the turn's own silence (``AGENTIA_VOICE_MIN_SILENCE_S``, 0.35 s) was
the largest wait left between the caller's last word and the agent's voice. Whisper (and the
cloud recognisers) write punctuation: a final transcript that ends a sentence (``.``, ``?``,
``!``, not after "and", "the", "to" …) ends the turn after ``AGENTIA_VOICE_FINISHED_SILENCE_S``
(0.2 s) of silence, one that does not keeps the full wait.

:class:`SentenceEnd` is a livekit-agents turn detector (``turn.py``'s ``_TurnDetector``
protocol): at each end of speech with a transcript the session asks it for the probability
that the turn ended, and below its ``unlikely_threshold`` waits the endpointing's
``max_delay`` (the full silence) instead of its ``min_delay`` (the short one). The rule itself,
:func:`sounds_finished`, is pure. What a recogniser without punctuation gets is decided by
:func:`judge_for`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import Any

from livekit.agents.voice.turn import EndpointingOptions

from voice.settings import VoiceSettings

log = logging.getLogger("agentia.voice")

FINISHED, UNFINISHED = 1.0, 0.0
"""The probabilities :class:`SentenceEnd` answers: the rule says yes or no."""
THRESHOLD = 0.5
"""Below it the session waits the full silence (livekit-agents' ``unlikely_threshold``)."""

SENTENCE_END = (".", "?", "!")
TRAILING_OFF = ("...", "…", "-", "—")
"""Whisper's marks of a sentence left hanging ("I would like to..."): not finished."""
NEVER_LAST = frozenset((
    "a", "an", "the", "my", "your", "our", "their", "its", "every",  # articles, possessives
    "and", "or", "but", "nor", "because", "if", "than", "when", "while", "until", "unless",
    "although", "though", "whether",  # conjunctions
    "to", "of", "for", "with", "from", "into", "onto", "at", "by", "in", "via", "per",
    "between", "without",  # prepositions
    "um", "uh", "er", "mr", "mrs", "ms", "dr", "st"))  # fillers, titles with a full stop
"""Words a sentence does not end with: a transcript ending in one was cut at a pause
("I would like to."; Whisper wrote "What is the weather in?" for "what is the weather in").
A question may end with a preposition ("Where are you from?"): it then waits the full
silence, which costs only time. Particles that end phrasal verbs ("turn it on") are not
listed."""
NOT_LAST_OF_QUESTION = frozenset((
    "is", "are", "was", "were", "am", "do", "does", "did", "can", "could", "will", "would",
    "shall", "should", "may", "might", "must", "have", "has"))
"""Auxiliaries a question does not end with (Whisper wrote "What is?" for "what is"), though
a short answer does ("Yes, it is.")."""
_CLOSERS = "\"')]}\u00bb\u201d\u2019"
_WORD = re.compile(r"[a-z']+")

Judge = Callable[[str], bool]
"""Whether a turn's transcript so far sounds finished."""


def sounds_finished(text: str) -> bool:
    """``text`` (the turn's final transcript so far) ends a sentence: its last mark is
    ``.``, ``?`` or ``!`` (not an ellipsis), and its last word is not one a sentence goes on
    after (:data:`NEVER_LAST`; :data:`NOT_LAST_OF_QUESTION` when it asks one)."""
    t = text.strip().rstrip(_CLOSERS).rstrip()
    if not t.endswith(SENTENCE_END) or t.endswith(TRAILING_OFF):
        return False
    words = _WORD.findall(t.lower())
    if not words or words[-1] in NEVER_LAST:
        return False
    return not t.endswith("?") or words[-1] not in NOT_LAST_OF_QUESTION


def whole_phrase(text: str) -> bool:
    """A phrase grammar's transcript (pocketsphinx with ``AGENTIA_VOICE_PHRASES``): its decoder
    accepts only whole phrases, so every transcript is one (never punctuated)."""
    return bool(text.strip())


def never(_text: str) -> bool:
    """An open-vocabulary recogniser that writes no punctuation: nothing says the sentence
    ended, every turn keeps the full silence."""
    return False


def judge_for(stt: str, phrases: str) -> Judge:
    """The rule for the configured recogniser (``AGENTIA_VOICE_STT``): punctuation for Whisper
    and the cloud ones, a whole phrase for pocketsphinx's grammar, never for its open
    vocabulary."""
    if stt == "pocketsphinx":
        return whole_phrase if phrases else never
    return sounds_finished


def last_user_text(chat_ctx: Any) -> str:
    """The turn's transcript: the chat context's last user message (livekit-agents adds the
    turn's final transcripts so far as one)."""
    for item in reversed(chat_ctx.items):
        if getattr(item, "type", None) == "message" and item.role == "user":
            return str(item.text_content or "")
    return ""


class SentenceEnd:
    """A livekit-agents turn detector over :data:`Judge`: finished → the short delay,
    otherwise the full silence. Counts its answers (``finished``, ``unfinished``), logged
    when the call ends (:meth:`summary`)."""

    def __init__(self, judge: Judge = sounds_finished) -> None:
        self.judge = judge
        self.finished = self.unfinished = 0

    @property
    def model(self) -> str:
        return "sentence-end"

    @property
    def provider(self) -> str:
        return "agentia"

    async def unlikely_threshold(self, language: Any) -> float | None:
        return THRESHOLD

    async def supports_language(self, language: Any) -> bool:
        return True  # punctuation is not English's alone; the word list is, and only narrows

    async def predict_end_of_turn(self, chat_ctx: Any, *,
                                  timeout: float | None = None) -> float:  # noqa: ASYNC109
        if self.judge(last_user_text(chat_ctx)):
            self.finished += 1
            return FINISHED
        self.unfinished += 1
        return UNFINISHED

    def summary(self) -> dict[str, int]:
        return {"finished": self.finished, "unfinished": self.unfinished}


def turn_vad_silence(s: VoiceSettings) -> float:
    """The silence after which the turn VAD reports the end of speech: with ``sentence`` the
    short one, so that a finished sentence's shorter wait can act (the longer one is then the
    endpointing's ``max_delay``, counted from the same end of speech)."""
    if s.voice_turn_detection == "sentence":
        return s.voice_finished_silence_s
    return s.voice_min_silence_s


def endpointing(s: VoiceSettings) -> EndpointingOptions:
    """livekit-agents' wait after the end of speech: ``min_delay`` when the turn detector
    says the turn ended, ``max_delay`` when it says it sounds unfinished."""
    if s.voice_turn_detection == "sentence":
        return {"min_delay": s.voice_finished_silence_s, "max_delay": s.voice_min_silence_s}
    delay = s.voice_endpoint_delay_s
    return {"min_delay": delay, "max_delay": max(delay, 3.0)}


def turn_detector(s: VoiceSettings) -> Any:
    """The end-of-turn decision: silence, shorter after a finished sentence
    (:class:`voice.turn_end.SentenceEnd`), silence alone, or the local audio model. The
    model's version is given explicitly: left out, livekit-agents may pick the hosted ``v1``
    model (LiveKit Inference)."""
    if s.voice_turn_detection == "sentence":
        return SentenceEnd(judge_for(s.voice_stt, s.voice_phrases))
    if s.voice_turn_detection == "vad":
        return "vad"
    from livekit.agents.inference.eot import TurnDetector
    return TurnDetector(version="v1-mini")
