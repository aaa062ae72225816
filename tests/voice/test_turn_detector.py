"""The on-device end-of-turn model (livekit-local-inference): offline, local, and wired by
``AGENTIA_VOICE_TURN_DETECTION=model``."""

from __future__ import annotations

import numpy as np
import pytest

from agentia.settings import from_env
from voice.settings import VoiceSettings
from voice.speech import espeak_pcm
from voice.turn_end import turn_detector


def test_model_setting_builds_the_local_mini_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTIA_VOICE_TURN_DETECTION", "model")
    detector = turn_detector(from_env(VoiceSettings))
    assert detector._model == "turn-detector-v1-mini"
    assert detector._cloud_opts is None  # nothing goes to LiveKit Inference
    monkeypatch.setenv("AGENTIA_VOICE_TURN_DETECTION", "vad")
    assert turn_detector(from_env(VoiceSettings)) == "vad"


async def test_the_model_runs_offline_on_speech(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its weights ship in the wheel: a prediction on real speech needs no network. (What it
    says of espeak-ng speech is printed, not asserted: it is why the default is ``vad``.)"""
    from livekit.local_inference import EOT

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    eot = EOT()
    for text in ("tell me about the weather in paris tomorrow.",
                 "I would like to book a flight to"):
        raw = await espeak_pcm(text)  # 16-bit mono at espeak's 22,050 Hz
        pcm = np.frombuffer(raw, dtype=np.int16)
        at_16k = pcm[(np.arange(0, len(pcm), 22050 / 16000)).astype(int)]
        p = eot.predict(np.ascontiguousarray(at_16k[-19200:]))
        assert 0.0 <= p <= 1.0
        print(f"P(end of turn) {p:.3f}: {text}")
    eot.close()
