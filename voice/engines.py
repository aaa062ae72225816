"""Speech engines loaded once per voice worker process and shared by its calls.

With the thread executor (``AGENTIA_VOICE_EXECUTOR=thread``) every call is a thread of one
process: the Whisper weights, CTranslate2's and onnxruntime's libraries and the Silero model
are in memory once, not once per call (a job process with its own copy was 450-520 MB RSS).
What a call holds of its own is cheap: its ``stt.STT`` and ``vad.VAD`` objects, which
livekit-agents' session subscribes to (metrics events), so they must not be shared between
calls that run on different event loops; they only borrow the engines below.

Whisper is one model with ``AGENTIA_VOICE_STT_ENGINES`` CTranslate2 replicas over one copy of
the weights (:func:`voice.stt_whisper.load_model`); :class:`EnginePool` hands out that many
turns at it: that many utterances are transcribed at once, a further one waits for the first
free turn (within the utterance's time bound). pocketsphinx has no such sharing: the pool holds
that many decoders.

After a model is loaded :func:`once` returns glibc's freed heap to the system
(``malloc_trim``): loading Whisper base left 26-83 MiB of freed heap that glibc kept.
"""

from __future__ import annotations

import ctypes
import dataclasses
import queue
import sys
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

    def idle(self) -> bool:
        """An engine is free and no :meth:`decode` waits for one (a hint: another thread may
        take it the next moment)."""
        return not self._waiting and not self._free.empty()

    def try_decode(self, pcm16k: bytes) -> str | None:
        """:meth:`decode` if an engine is free and no :meth:`decode` waits for one, else
        None at once: interim transcripts never delay a final one (voice/interim.py)."""
        try:
            engine = None if self._waiting else self._free.get_nowait()
        except queue.Empty:
            return None
        if engine is None:
            return None
        try:  # Whisper has a cheaper decoding for guesses; pocketsphinx has one decoding
            return getattr(engine, "decode_quick", engine.decode)(pcm16k)
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


def vad_like(shared: silero.VAD, **opts: Any) -> silero.VAD:
    """A call's own Silero VAD object on the process's one ONNX session (onnxruntime runs a
    session from several threads at once; each stream keeps its own model state), with
    ``opts`` changed (``min_silence_duration=``: the recogniser's VAD is the turn's VAD with
    a shorter silence; its own session cost 9.8 MiB PSS more)."""
    return silero.VAD(session=shared._onnx_session, opts=dataclasses.replace(shared._opts, **opts))


_lock = threading.Lock()
_shared: dict[tuple[Any, ...], Any] = {}


def once(key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
    """``make()`` the first time ``key`` is asked for in this process, the same object after
    (the thread executor calls the prewarm function once per call); then the heap the loading
    freed goes back to the system (:func:`trim_heap`)."""
    with _lock:
        if key not in _shared:
            _shared[key] = make()
            trim_heap()
        return _shared[key]


def trim_heap() -> bool:
    """glibc's ``malloc_trim(0)``: freed pages of every malloc arena back to the system
    (loading a model frees hundreds of MB in chunks glibc keeps). False where there is no
    glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (musl)
        return False
    libc.malloc_trim(0)
    return True
