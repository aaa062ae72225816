"""The offline speech plugins on audio made with espeak-ng (no room, no network)."""

from __future__ import annotations

import numpy as np
import pytest
from livekit import rtc

from voice.settings import VoiceSettings
from voice.speech import (
    ESPEAK_RATE,
    EspeakTTS,
    PocketsphinxSTT,
    SpeechError,
    jsgf_for,
    normalise,
    to_mono16k,
)

PHRASES = VoiceSettings().phrases()


@pytest.fixture(scope="module")
def recogniser() -> PocketsphinxSTT:
    return PocketsphinxSTT(PHRASES)


def resampled(frame: rtc.AudioFrame, rate: int) -> list[rtc.AudioFrame]:
    rs = rtc.AudioResampler(frame.sample_rate, rate, num_channels=1)
    return [*rs.push(frame), *rs.flush()]


def rms(frame: rtc.AudioFrame) -> float:
    pcm = np.frombuffer(frame.data, dtype=np.int16).astype(np.float64)
    return float(np.sqrt(np.mean(pcm**2)))


def test_normalise_keeps_words_only() -> None:
    assert normalise("  What TIME is it?! ") == "what time is it"
    assert normalise("don't-stop") == "don't stop"


def test_grammar_lists_each_phrase_once() -> None:
    g = jsgf_for(["What time is it?", "stop"])
    assert "public <utterance> = ( what time is it ) | ( stop ) ;" in g


def test_unknown_words_are_refused_at_start() -> None:
    with pytest.raises(SpeechError, match="zzxqv"):
        PocketsphinxSTT(["hello zzxqv"])


async def test_tts_makes_audible_speech_of_the_right_length() -> None:
    tts = EspeakTTS()
    short = await tts.synthesize("stop").collect()
    long = await tts.synthesize("what is six times seven").collect()
    assert short.sample_rate == ESPEAK_RATE and short.num_channels == 1
    assert rms(short) > 500 and rms(long) > 500
    assert 0.3 < short.duration < long.duration < 4.0


async def test_tts_of_empty_text_is_silent() -> None:
    frames = [a.frame async for a in EspeakTTS().synthesize("   ")]
    assert sum(f.samples_per_channel for f in frames) == 0


@pytest.mark.parametrize("phrase", ["what time is it", "what is six times seven",
                                    "hello agent how are you", "tell me a story"])
async def test_stt_recognises_espeak_speech_from_a_room(recogniser: PocketsphinxSTT,
                                                        phrase: str) -> None:
    speech = await EspeakTTS().synthesize(phrase).collect()
    ev = await recogniser.recognize(resampled(speech, 48_000))  # a room's rate
    assert normalise(ev.alternatives[0].text) == phrase


async def test_stt_on_silence_is_empty(recogniser: PocketsphinxSTT) -> None:
    silence = rtc.AudioFrame(bytes(2 * 16_000), 16_000, 1, 16_000)
    ev = await recogniser.recognize(silence)
    assert ev.alternatives[0].text == ""


def test_stereo_48k_becomes_mono_16k() -> None:
    t = np.arange(48_000) / 48_000
    tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
    stereo = np.stack([tone, tone], axis=1).reshape(-1)
    pcm = to_mono16k(rtc.AudioFrame(stereo.tobytes(), 48_000, 2, 48_000))
    out = np.frombuffer(pcm, dtype=np.int16)
    assert abs(len(out) - 16_000) < 200
    assert 4000 < np.sqrt(np.mean(out.astype(np.float64) ** 2)) < 7000
