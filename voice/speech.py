"""Offline speech plugins for livekit-agents: pocketsphinx STT and espeak-ng TTS.

Both use only what ships with a package (pocketsphinx's en-us model, Debian's espeak-ng):
nothing is downloaded at run time. The base classes of livekit-agents own retries, metrics and
errors; these implement only ``_recognize_impl`` and ``_run``. Pocketsphinx is not a streaming
recogniser: :func:`streaming_stt` wraps it with Silero VAD, which cuts utterances.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from livekit import rtc
from livekit.agents import (
    DEFAULT_API_CONNECT_OPTIONS,
    APIConnectOptions,
    APIError,
    stt,
    tts,
    utils,
)
from livekit.agents.language import LanguageCode
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from voice.priority import call_niced

STT_RATE = 16_000
ESPEAK_RATE = 22_050
MAX_TTS_CHARS = 2_000
"""Longer sentences are cut: one synthesis must stay short (the framework splits by sentence)."""
ESPEAK_TIMEOUT_S = 30.0
"""espeak-ng runs at most this long (a hung one must not hold its thread for ever)."""
_NOT_WORD = re.compile(r"[^a-z0-9' ]+")


class SpeechError(Exception):
    """A speech engine is missing or misconfigured (at start, never mid-call)."""


def normalise(text: str) -> str:
    """Lower case, letters and apostrophes, numbers in words, single spaces: how transcripts
    compare (Whisper writes "Set a timer for 10 minutes." for "set a timer for ten minutes")."""
    text = _TIME.sub(lambda m: f"{m[1]} {'' if m[2] == '00' else m[2]}", text.lower())
    text = _ORDINAL.sub(lambda m: _ordinal(int(m[1])), text.replace(",", ""))
    text = _NUMBER.sub(lambda m: number_words(int(m[0])), text)
    return " ".join(_SPELLING.get(w, w) for w in _NOT_WORD.sub(" ", text).split())


_SPELLING = {"favourite": "favorite", "colour": "color", "centre": "center",
             "theatre": "theater", "metre": "meter", "grey": "gray", "cheque": "check",
             "neighbour": "neighbor", "travelling": "traveling", "cancelled": "canceled",
             "organise": "organize", "programme": "program", "ok": "okay"}
"""British spellings (and one abbreviation) as Whisper writes them, so a spelling is not an
error."""


_ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
         "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
         "eighteen", "nineteen")
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_NUMBER = re.compile(r"\d{1,6}")
_ORDINAL = re.compile(r"\b(\d{1,6})(?:st|nd|rd|th)\b")
_TIME = re.compile(r"\b(\d{1,2}):(\d\d)\b")
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth",
                  "eight": "eighth", "nine": "ninth", "twelve": "twelfth"}


def number_words(n: int) -> str:
    """``n`` (< 1,000,000) in English words: 42 → "forty two", 1905 → "one thousand nine
    hundred five" (no "and": transcripts differ on it)."""
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for size, word in ((1000, "thousand"), (100, "hundred")):
        if n >= size:
            rest = n % size
            return f"{number_words(n // size)} {word}" + (f" {number_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def _ordinal(n: int) -> str:
    *head, last = number_words(n).split()
    if last in _ORDINAL_WORDS:
        return " ".join([*head, _ORDINAL_WORDS[last]])
    return " ".join([*head, last[:-1] + "ieth" if last.endswith("y") else last + "th"])


def jsgf_for(phrases: list[str]) -> str:
    """A JSGF grammar that accepts exactly one of ``phrases``."""
    alts = " | ".join(f"( {normalise(p)} )" for p in phrases)
    return f"#JSGF V1.0;\ngrammar agentia;\npublic <utterance> = {alts} ;\n"


def to_mono16k(frames: utils.AudioBuffer) -> bytes:
    """Any frames (any rate, any channels) as 16 kHz mono int16 PCM."""
    frame = rtc.combine_audio_frames(frames)
    pcm = np.frombuffer(frame.data, dtype=np.int16)
    if frame.num_channels > 1:
        pcm = pcm.reshape(-1, frame.num_channels).mean(axis=1).astype(np.int16)
    if frame.sample_rate == STT_RATE:
        return pcm.tobytes()
    mono = rtc.AudioFrame(pcm.tobytes(), frame.sample_rate, 1, len(pcm))
    rs = rtc.AudioResampler(frame.sample_rate, STT_RATE, num_channels=1,
                            quality=rtc.AudioResamplerQuality.HIGH)
    out = [*rs.push(mono), *rs.flush()]
    return b"".join(bytes(f.data) for f in out)


SILENT_PEAK = 64
"""A 16-bit utterance whose loudest sample is below this (-54 dBFS) holds no speech."""


class PocketsphinxSTT(stt.STT[Any]):
    """Non-streaming STT over pocketsphinx (en-us, shipped in the wheel).

    With ``phrases`` it decodes with a phrase grammar (accurate, closed vocabulary); without,
    with the en-us language model (open vocabulary, poor on free speech). Decoding runs in a
    thread, one utterance at a time per instance (a decoder is not thread-safe).
    """

    def __init__(self, phrases: list[str] | None = None, *, timeout_s: float = 5.0) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        from pocketsphinx import Decoder  # type: ignore[import-untyped]

        self._decoder = Decoder(samprate=STT_RATE, bestpath=False, fsgusefiller=False,
                                loglevel="FATAL")
        self._phrases = [normalise(p) for p in phrases or [] if normalise(p)]
        if self._phrases:
            unknown = sorted({w for p in self._phrases for w in p.split()
                              if self._decoder.lookup_word(w) is None})
            if unknown:
                raise SpeechError(f"words not in the en-us dictionary: {', '.join(unknown)}")
            self._decoder.add_jsgf_string("phrases", jsgf_for(self._phrases))
            self._decoder.activate_search("phrases")
        self._lock = threading.Lock()
        self.timeout_s = timeout_s

    @property
    def model(self) -> str:
        return "pocketsphinx-en-us" + ("-grammar" if self._phrases else "")

    @property
    def provider(self) -> str:
        return "agentia-offline"

    def decode(self, pcm16k: bytes) -> str:
        """Blocking: the transcript of one utterance (16 kHz mono int16), "" if none. Audio
        with no sound in it (peak below :data:`SILENT_PEAK`) is "": with a phrase grammar the
        decoder must pick a phrase, and on digital silence it sometimes did ("goodbye")."""
        samples = np.frombuffer(pcm16k, dtype=np.int16)
        if not samples.size or int(np.abs(samples.astype(np.int32)).max()) < SILENT_PEAK:
            return ""
        with self._lock:
            d = self._decoder
            d.start_utt()
            d.process_raw(pcm16k, full_utt=True)
            d.end_utt()
            hyp = d.hyp()
        return normalise(hyp.hypstr) if hyp is not None else ""

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        return final_transcript(await decode_bounded(self.decode, to_mono16k(buffer),
                                                     self.timeout_s))


async def decode_bounded(decode: Callable[[bytes], str], pcm16k: bytes,
                         timeout_s: float) -> str:
    """Run a blocking ``decode`` in a thread within ``timeout_s``.

    Any failure becomes a non-retryable ``APIError``: livekit-agents then reports it, counts it
    against the session's tolerance and recreates the STT stream. (Another exception type would
    stop the call's recogniser for good.) A timed-out decode finishes in its thread.
    """
    try:
        return await asyncio.wait_for(asyncio.to_thread(decode, pcm16k), timeout_s)
    except TimeoutError:
        raise APIError(f"speech recognition took over {timeout_s} s", retryable=False) from None
    except APIError:
        raise
    except Exception as exc:
        raise APIError(f"speech recognition failed: {exc}", retryable=False) from exc


def final_transcript(text: str) -> stt.SpeechEvent:
    return stt.SpeechEvent(
        type=stt.SpeechEventType.FINAL_TRANSCRIPT, request_id=uuid.uuid4().hex[:12],
        alternatives=[stt.SpeechData(language=LanguageCode("en"), text=text,
                                     confidence=1.0 if text else 0.0)])


def streaming_stt(recogniser: stt.STT[Any], vad: Any) -> stt.STT[Any]:
    """A streaming STT: ``vad`` (Silero) cuts utterances, ``recogniser`` transcribes each."""
    return stt.StreamAdapter(stt=recogniser, vad=vad)


async def espeak_pcm(text: str, voice: str = "en-us", wpm: int = 190, nice: int = 0) -> bytes:
    """espeak-ng's speech for ``text``: 22,050 Hz mono int16 PCM (no header).

    Run in a thread with :func:`subprocess.run`, not as an asyncio subprocess: with the
    ``thread`` executor each call's event loop closes when the call ends, and an asyncio
    subprocess cut short by a barge-in (killed, its pipes not yet closed) was collected after
    that loop had closed ("Event loop is closed" tracebacks in the worker's log). A cancelled
    synthesis finishes in its thread (espeak takes 10-15 ms a sentence; at most
    ``ESPEAK_TIMEOUT_S``) and its result is dropped. espeak-ng runs with its niceness changed by
    ``nice`` (:func:`voice.priority.call_niced`; the voice worker's ``AGENTIA_VOICE_TTS_NICE``):
    a reply's first clause is a short job on the answer's path that, at the calls' priority,
    waited behind other calls' decodings (docs/voice.md, "Session 19")."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
    try:
        done = await asyncio.to_thread(call_niced, functools.partial(
            _run_espeak, [exe, "-v", voice, "-s", str(wpm), "--stdout"],
            text[:MAX_TTS_CHARS].encode()), nice)
    except subprocess.TimeoutExpired:
        raise APIError(f"espeak-ng took over {ESPEAK_TIMEOUT_S:.0f} s", retryable=False) from None
    if done.returncode != 0:
        raise APIError(f"espeak-ng failed ({done.returncode}): {done.stderr.decode()[:200]}",
                       retryable=False)
    return _wav_data(done.stdout)


def _run_espeak(args: list[str], text: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(args, input=text, capture_output=True, timeout=ESPEAK_TIMEOUT_S,
                          check=False)


def _wav_data(wav: bytes) -> bytes:
    """The samples of espeak's WAV (its streamed header has placeholder sizes: skip it)."""
    at = wav.find(b"data", 12)
    if not wav.startswith(b"RIFF") or at < 0:
        raise APIError("espeak-ng wrote no WAV data", retryable=False)
    data = wav[at + 8:]
    return data[: len(data) - len(data) % 2]


class EspeakTTS(tts.TTS[Any]):
    """Non-streaming TTS over espeak-ng (10-15 ms a sentence, byte-identical output)."""

    def __init__(self, voice: str = "en-us", wpm: int = 190, *, timeout_s: float = 5.0,
                 nice: int = 0) -> None:
        super().__init__(capabilities=tts.TTSCapabilities(streaming=False),
                         sample_rate=ESPEAK_RATE, num_channels=1)
        if shutil.which("espeak-ng") is None:
            raise SpeechError("espeak-ng is not installed (apt-get install espeak-ng)")
        self.voice = voice
        self.wpm = wpm
        self.timeout_s = timeout_s
        """One sentence's synthesis longer than this fails (the caller is told)."""
        self.nice = nice
        """espeak-ng's niceness, relative to the calling thread's (:func:`espeak_pcm`)."""

    @property
    def model(self) -> str:
        return f"espeak-ng-{self.voice}"

    @property
    def provider(self) -> str:
        return "agentia-offline"

    def synthesize(self, text: str, *,
                   conn_options: APIConnectOptions = DEFAULT_API_CONNECT_OPTIONS
                   ) -> tts.ChunkedStream:
        return _EspeakStream(tts=self, input_text=text, conn_options=conn_options)


class _EspeakStream(tts.ChunkedStream):
    def __init__(self, *, tts: EspeakTTS, input_text: str,
                 conn_options: APIConnectOptions) -> None:
        super().__init__(tts=tts, input_text=input_text, conn_options=conn_options)
        self._espeak = tts

    async def _run(self, output_emitter: tts.AudioEmitter) -> None:
        output_emitter.initialize(request_id=uuid.uuid4().hex[:12], sample_rate=ESPEAK_RATE,
                                  num_channels=1, mime_type="audio/pcm")
        text, e = self.input_text.strip(), self._espeak
        if text:
            try:
                pcm = await asyncio.wait_for(espeak_pcm(text, e.voice, e.wpm, e.nice),
                                             e.timeout_s)
            except TimeoutError:
                raise APIError(f"speech synthesis took over {e.timeout_s} s",
                               retryable=False) from None
            output_emitter.push(pcm)
        output_emitter.flush()
