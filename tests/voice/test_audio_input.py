"""How a call takes its caller's audio (voice/job.py ``audio_input``): a web caller's
microphone has its own gain control, a phone line does not; WebRTC's gain control takes
whole 10 ms blocks only (another length panics in its native code and aborts the process)."""

from __future__ import annotations

import numpy as np
from livekit import rtc

from voice.settings import VoiceSettings
from voice.telephony import caller_identity
from voice.worker import INPUT_RATE, audio_input


def test_a_web_caller_gets_silero_windows_without_gain_control() -> None:
    opts = audio_input(VoiceSettings(), "alice")
    assert opts.auto_gain_control is False
    assert opts.frame_size_ms == 32
    assert opts.frame_size_ms * INPUT_RATE // 1000 == 512  # one Silero window a frame


def test_a_phone_caller_gets_gain_control_on_whole_blocks() -> None:
    opts = audio_input(VoiceSettings(), caller_identity("+15550100"))
    assert opts.auto_gain_control is True
    assert opts.frame_size_ms == 40
    assert audio_input(VoiceSettings(voice_input_frame_ms=20), "sip_1").frame_size_ms == 20
    # the frame the call's gain control then gets is processed (a 32 ms one would abort)
    n = opts.frame_size_ms * INPUT_RATE // 1000
    pcm = np.random.default_rng(1).integers(-300, 300, n).astype(np.int16)
    frame = rtc.AudioFrame(pcm.tobytes(), INPUT_RATE, 1, n)
    rtc.AudioProcessingModule(auto_gain_control=True).process_stream(frame)
    assert frame.samples_per_channel == n
