"""The speech objects the voice settings name: the recogniser (local Whisper, Moonshine,
pocketsphinx, or a cloud provider), the synthesiser, the local recogniser's shared engines, and
the start-up check of their pinned model files. No model is downloaded: every model is given as
an object, never as a model-name string (voice/worker.py is the composition root that uses them).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from livekit.agents import stt, tts

from voice.engines import EnginePool
from voice.moonshine_model import package_dir, read_pinned
from voice.priority import load_niced
from voice.providers import cloud_recogniser, cloud_synthesiser, load_plugins
from voice.settings import CLOUD_STT, VoiceSettings
from voice.speech import EspeakTTS, PocketsphinxSTT
from voice.stt_moonshine import MoonshineSTT
from voice.stt_whisper import PACKAGED, WhisperSTT, compute_type, model_paths, read_weights

log = logging.getLogger("agentia.voice")


def model_pin(s: VoiceSettings) -> tuple[Path | None, str]:
    """(model directory or None for the packaged model's, sha256 its model.bin must have or
    "")."""
    if not s.voice_stt_model_dir:
        return None, s.voice_stt_model_sha256 or PACKAGED[s.voice_stt_model].sha256
    sha = s.voice_stt_model_sha256
    return Path(s.voice_stt_model_dir), "" if sha == "none" else sha


def recogniser(s: VoiceSettings) -> stt.STT[Any]:
    """The configured STT (``AGENTIA_VOICE_STT``); raises SpeechError when it cannot load."""
    if s.voice_stt in CLOUD_STT:
        return cloud_recogniser(s)
    if s.voice_stt == "pocketsphinx":
        return PocketsphinxSTT(s.phrases(), timeout_s=s.voice_stt_timeout_s)
    if s.voice_stt == "moonshine":
        return moonshine(s)
    return whisper(s)


def whisper(s: VoiceSettings, workers: int = 1) -> WhisperSTT:
    """The configured Whisper model, its pinned weights verified, ``workers`` utterances at
    once over one copy of its weights."""
    model_dir, sha = model_pin(s)
    return WhisperSTT(model_dir, model=s.voice_stt_model, sha256=sha,
                      threads=s.voice_stt_threads, context_s=s.voice_stt_context_s,
                      pad_s=s.voice_stt_pad_s, beam_size=s.voice_stt_beam,
                      timeout_s=s.voice_stt_timeout_s, workers=workers,
                      compute=compute_type(s.voice_stt_compute_type))


def moonshine(s: VoiceSettings, workers: int = 1) -> MoonshineSTT:
    """Moonshine base from its pinned wheel, ``workers`` utterances at once over one copy."""
    return MoonshineSTT(threads=s.voice_stt_threads, workers=workers,
                        timeout_s=s.voice_stt_timeout_s)


def synthesiser(s: VoiceSettings) -> tts.TTS[Any]:
    """The configured TTS (``AGENTIA_VOICE_TTS``)."""
    if s.voice_tts == "openai":
        return cloud_synthesiser(s)
    return EspeakTTS(s.voice_espeak, s.voice_espeak_wpm,
                     timeout_s=s.voice_tts_timeout_s, nice=s.voice_tts_nice)


def check_speech(s: VoiceSettings) -> None:
    """At start, before taking calls: the pinned model files are there and unaltered, a cloud
    provider selected has its key and plugin (SettingsError)."""
    load_plugins(s)
    if s.voice_stt == "whisper":
        model_dir, sha = model_pin(s)
        parts = [model_dir / "model.bin"] if model_dir else model_paths(s.voice_stt_model)[0]
        read_weights(parts, sha)
    if s.voice_stt == "moonshine":
        read_pinned(package_dir())



def stt_pool(s: VoiceSettings) -> EnginePool:
    """The local recogniser's engines: ``voice_stt_engines`` utterances at once with the
    thread executor (Whisper: one model, that many replicas; Moonshine: one pair of sessions
    that many decodings run on at once; pocketsphinx: that many decoders), one per job process
    otherwise; their threads at ``voice_stt_nice`` (voice/priority.py)."""
    n = s.voice_stt_engines if s.voice_executor == "thread" else 1
    if s.voice_stt == "pocketsphinx":
        sphinx = [PocketsphinxSTT(s.phrases()) for _ in range(n)]
        log.info("speech engines loaded in process %d: %d x %s", os.getpid(), n,
                 sphinx[0].model)
        return EnginePool(list(sphinx), sphinx[0].model)
    shared: WhisperSTT | MoonshineSTT = load_niced(
        lambda: moonshine(s, workers=n) if s.voice_stt == "moonshine" else whisper(s, workers=n),
        s.voice_stt_nice)
    log.info("speech engines loaded in process %d: %d x %s, %s (AGENTIA_VOICE_STT_COMPUTE_TYPE"
             "=%s), nice %+d", os.getpid(), n, shared.model, shared.compute_type,
             s.voice_stt_compute_type, s.voice_stt_nice)
    return EnginePool([shared] * n, shared.model)
