"""A call's speech as text in the session log: ``transcript`` events (docs/protocol.md §5).

- The caller: each **final** transcript of an utterance, as the recogniser gives it (before the
  turn it makes, or part of, is submitted). Interim transcripts (a streaming recogniser's
  guesses, several a second, each replacing the last) are **not** written: the log would grow
  with every guess and a late reader would replay them all for nothing. Whisper and
  pocketsphinx give none (one transcript an utterance); Deepgram's are dropped here.
- The agent: its reply **as it is spoken**, a sentence at a time, from the room's transcript
  synchroniser (text paced by the audio actually played), and what was said of a sentence cut
  short by a barge-in. Each sentence is final: spoken is spoken.

A final caller transcript is also the barge-in signal for the turns this call asked
(:meth:`voice.bridge.VoiceBridge.barge_in`): the caller spoke while the reply was not finished,
whatever the audio was doing. Not in the agent's echo-canceller warm-up (its first seconds of
speech), where livekit-agents takes what the caller's microphone hears for echo.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from livekit.agents.voice import io

from voice.bridge import VoiceBridge

log = logging.getLogger("agentia.voice")

SENTENCE_END = re.compile(r"[.!?…][\"')\]]*\s*$")
SPOKEN_MAX = 4_000
"""Characters of one spoken segment kept before it is written anyway (bounded buffer)."""


class SpokenText(io.TextOutput):
    """The last link of the room's transcription chain: the agent's words as they are played,
    written to the session log a sentence at a time."""

    def __init__(self, bridge: VoiceBridge) -> None:
        super().__init__(label="AgentiaTranscript", next_in_chain=None)
        self.bridge = bridge
        self._text = ""

    async def capture_text(self, text: str) -> None:
        self._text += text
        if SENTENCE_END.search(self._text) or len(self._text) >= SPOKEN_MAX:
            self._write()

    def flush(self) -> None:
        self._write()

    def _write(self) -> None:
        text, self._text = self._text.strip(), ""
        if text:
            self.bridge.spawn(self.bridge.transcript("agent", text, True,
                                                     self.bridge.speaking_turn))


class CallerSpeech:
    """``user_input_transcribed`` of one call: final transcripts logged, barge-in decided."""

    def __init__(self, bridge: VoiceBridge, aec_warmup_s: float) -> None:
        self.bridge = bridge
        self.warmup_s = aec_warmup_s
        self._first_spoke: float | None = None

    def on_agent_state(self, ev: Any) -> None:
        if ev.new_state == "speaking" and self._first_spoke is None:
            self._first_spoke = time.monotonic()

    def in_warmup(self) -> bool:
        """Whether livekit-agents still ignores interruptions (it counts the warm-up from the
        agent's first speech of the call)."""
        return (self._first_spoke is not None
                and time.monotonic() < self._first_spoke + self.warmup_s)

    def on_transcribed(self, ev: Any) -> None:
        text = str(ev.transcript).strip()
        log.debug("heard (final=%s): %r", ev.is_final, text)
        if not (ev.is_final and text):
            return
        self.bridge.spawn(self.bridge.transcript("user", text, True))
        if not self.in_warmup() and (turns := self.bridge.barge_in()):
            log.info("the caller spoke over turns %s of %s", turns, self.bridge.session)
