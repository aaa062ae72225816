"""Speech engines loaded once per voice worker process and shared by its calls.

With the thread executor (``AGENTIA_VOICE_EXECUTOR=thread``) every call is a thread of one
process: the Whisper weights, CTranslate2's and onnxruntime's libraries and the Silero model
are in memory once, not once per call (a job process with its own copy was 450-520 MB RSS).
What a call holds of its own is cheap: its ``stt.STT`` and ``vad.VAD`` objects, which
livekit-agents' session subscribes to (metrics events), so they must not be shared between
calls that run on different event loops; they only borrow the engines below.

Whisper decodes one utterance at a time per model (:class:`voice.stt_whisper.WhisperSTT` holds
a lock), so :class:`EnginePool` keeps ``AGENTIA_VOICE_STT_ENGINES`` of them: that many calls are
transcribed at once, a further utterance waits for the first free engine (within the
utterance's time bound).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, Protocol

from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.plugins import silero

from voice.speech import decode_bounded, final_transcript, to_mono16k


class Decoder(Protocol):
    """A blocking recogniser of one utterance (16 kHz mono int16 PCM)."""

    def decode(self, pcm16k: bytes) -> str: ...


class EnginePool:
    """Decoders shared by the threads of one process; :meth:`decode` borrows the first free
    one (blocking) for one utterance."""

    def __init__(self, engines: list[Decoder], model: str) -> None:
        self.model = model
        self.size = len(engines)
        self._free: queue.SimpleQueue[Decoder] = queue.SimpleQueue()
        self._waiting = 0
        self._count = threading.Lock()
        for engine in engines:
            self._free.put(engine)

    def decode(self, pcm16k: bytes) -> str:
        with self._count:
            self._waiting += 1
        try:
            engine = self._free.get()  # bounded by the caller: decode_bounded's time limit
        finally:
            with self._count:
                self._waiting -= 1
        try:
            return engine.decode(pcm16k)
        finally:
            self._free.put(engine)

    def try_decode(self, pcm16k: bytes) -> str | None:
        """:meth:`decode` if an engine is free and no :meth:`decode` waits for one, else
        None at once: interim transcripts never delay a final one (voice/interim.py)."""
        try:
            engine = None if self._waiting else self._free.get_nowait()
        except queue.Empty:
            return None
        if engine is None:
            return None
        try:
            return engine.decode(pcm16k)
        finally:
            self._free.put(engine)


class PooledSTT(stt.STT[Any]):
    """One call's non-streaming STT over a process-wide :class:`EnginePool`."""

    def __init__(self, pool: EnginePool, *, timeout_s: float) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        self.pool = pool
        self.timeout_s = timeout_s

    @property
    def model(self) -> str:
        return self.pool.model

    @property
    def provider(self) -> str:
        return "agentia-offline"

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        return final_transcript(await decode_bounded(self.pool.decode, to_mono16k(buffer),
                                                     self.timeout_s))


def vad_like(shared: silero.VAD) -> silero.VAD:
    """A call's own Silero VAD object on the process's one ONNX session (onnxruntime runs a
    session from several threads at once; each stream keeps its own model state)."""
    return silero.VAD(session=shared._onnx_session, opts=shared._opts)


_lock = threading.Lock()
_shared: dict[tuple[Any, ...], Any] = {}


def once(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``make()`` the first time ``key`` is asked for in this process, the same object after
    (the thread executor calls the prewarm function once per call)."""
    with _lock:
        if key not in _shared:
            _shared[key] = make()
        return _shared[key]
