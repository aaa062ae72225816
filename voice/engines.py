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

import collections
import ctypes
import dataclasses
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr
from livekit.plugins import silero

from voice.speech import decode_bounded, final_transcript, to_mono16k
from voice.stt_whisper import MAX_BATCH

log = logging.getLogger("agentia.voice")


class Decoder(Protocol):
    """A blocking recogniser of one utterance (16 kHz mono int16 PCM)."""

    def decode(self, pcm16k: bytes) -> str: ...


@dataclasses.dataclass(eq=False)
class _Request:
    """One utterance waiting in an :class:`EnginePool`, and its outcome once decoded."""

    pcm: bytes
    queued: float = dataclasses.field(default_factory=time.monotonic)
    text: str = ""
    error: BaseException | None = None
    done: bool = False

    def result(self) -> str:
        if self.error is not None:
            raise self.error
        return self.text


class EnginePool:
    """Decoders shared by the threads of one process.

    :meth:`decode` queues its utterance; the first caller to find an engine free takes it and
    decodes, in one batch, its own utterance and the oldest others waiting (up to
    ``max_batch``, for an engine with ``decode_many``: Whisper), then hands the engine and the
    transcripts back. Nothing waits to fill a batch: a batch is what queued while the engines
    were busy, so one call alone decodes as before and concurrent calls whose utterances end
    close together share one decoding, at less CPU each (docs/voice.md, "Batching"). The
    queue holds one utterance per waiting caller thread."""

    def __init__(self, engines: list[Decoder], model: str, max_batch: int = MAX_BATCH) -> None:
        self.model = model
        self.size = len(engines)
        self.max_batch = max_batch
        self.batches: dict[int, int] = {}
        """Batches decoded, by size (for the benchmarks)."""
        self._free = list(engines)
        self._pending: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()

    @property
    def _waiting(self) -> int:
        return len(self._pending)

    def decode(self, pcm16k: bytes) -> str:
        req = _Request(pcm16k)
        with self._cond:  # bounded by the caller: decode_bounded's time limit
            self._pending.append(req)
            others = self.size - len(self._free) + len(self._pending) - 1
            while not req.done and not (self._free and req in self._pending):
                self._cond.wait()
            if req.done:  # decoded in another caller's batch
                return req.result()
            engine = self._free.pop()
            batch = self._take(req, engine)
        self._run(engine, batch, others)
        return req.result()

    def _take(self, req: _Request, engine: Decoder) -> list[_Request]:
        """``req`` and the oldest other waiting utterances, as many as ``engine`` batches."""
        self._pending.remove(req)
        n = self.max_batch if hasattr(engine, "decode_many") else 1
        batch = [req]
        while self._pending and len(batch) < n:
            batch.append(self._pending.popleft())
        return batch

    def _run(self, engine: Decoder, batch: list[_Request], others: int) -> None:
        texts: list[str] = []
        error: BaseException | None = None
        t0 = time.monotonic()
        try:
            if len(batch) == 1:
                texts = [engine.decode(batch[0].pcm)]
            else:
                texts = engine.decode_many([r.pcm for r in batch])  # type: ignore[attr-defined]
        except Exception as exc:  # every utterance of the batch fails with it
            error = exc
        with self._cond:
            for i, r in enumerate(batch):
                r.error = error
                r.text = texts[i] if error is None else ""
                r.done = True
            self.batches[len(batch)] = self.batches.get(len(batch), 0) + 1
            self._free.append(engine)
            self._cond.notify_all()
        # where a final transcript's time goes: waiting for an engine, then decoding; and how
        # many other decodings (finals, interims) ran or waited when its utterance came
        # (loadtest.voice_stages.decodes sums these lines for bench_voice)
        log.info("decode timings (ms): %s", {
            "batch": len(batch), "wait": [round(1000 * (t0 - r.queued)) for r in batch],
            "decode": round(1000 * (time.monotonic() - t0)), "others": others})
        if len(batch) > 1:
            log.info("decoded %d utterances in one batch (batches so far by size: %s)",
                     len(batch), dict(sorted(self.batches.items())))

    def idle(self) -> bool:
        """An engine is free and no :meth:`decode` waits for one (a hint: another thread may
        take it the next moment)."""
        with self._cond:
            return not self._pending and bool(self._free)

    def try_decode(self, pcm16k: bytes) -> str | None:
        """:meth:`decode` if an engine is free and no :meth:`decode` waits for one, else
        None at once: interim transcripts never delay a final one (voice/interim.py). With
        more than one engine an interim never takes the last free one: a final that ends
        while interims run finds an engine instead of waiting for a guess to finish."""
        with self._cond:
            if self._pending or len(self._free) < min(2, self.size):
                return None
            engine = self._free.pop()
        t0 = time.monotonic()
        try:  # Whisper has a cheaper decoding for guesses; pocketsphinx has one decoding
            return getattr(engine, "decode_quick", engine.decode)(pcm16k)
        finally:
            with self._cond:
                self._free.append(engine)
                self._cond.notify_all()
            log.info("decode timings (ms): %s",
                     {"interim": 1, "decode": round(1000 * (time.monotonic() - t0))})


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
