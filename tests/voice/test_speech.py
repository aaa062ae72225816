"""The offline speech plugins on audio made with espeak-ng (no room, no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from livekit import rtc
from livekit.agents import APIError

from agentia.settings import SettingsError
from voice import worker
from voice.settings import WHISPER_MODELS, VoiceSettings
from voice.speech import (
    ESPEAK_RATE,
    EspeakTTS,
    PocketsphinxSTT,
    SpeechError,
    jsgf_for,
    normalise,
    to_mono16k,
)
from voice.stt_whisper import (
    PACKAGED,
    TINY_EN_SHA256,
    WhisperSTT,
    default_model_dir,
    model_paths,
    read_weights,
    verify_model,
)
from voice.worker import model_pin

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


# ------------------------------------------------------------------ Whisper (the default STT)


@pytest.fixture(scope="module")
def whisper() -> WhisperSTT:
    return WhisperSTT(model="tiny.en", threads=2)


@pytest.mark.parametrize("sentence", ["tell me about the weather in paris tomorrow",
                                      "please remember that my favourite colour is green"])
async def test_whisper_transcribes_free_speech_from_a_room(whisper: WhisperSTT,
                                                           sentence: str) -> None:
    speech = await EspeakTTS(wpm=170).synthesize(sentence).collect()
    ev = await whisper.recognize(resampled(speech, 48_000))
    heard = normalise(ev.alternatives[0].text).replace("favorite color", "favourite colour")
    assert heard == sentence


async def test_an_interims_quick_decoding_hears_the_same_words(whisper: WhisperSTT) -> None:
    """decode_quick (interims: the audio plus 1 s of silence, greedy) on the 4.5 s sentence
    whose unpadded decoding looped ("a a a a ..."), and on a short one."""
    for sentence in ("send a message to john saying that i am running about ten minutes late "
                     "today", "what time is it"):
        speech = await EspeakTTS(wpm=170).synthesize(sentence).collect()
        pcm = to_mono16k(speech)
        full, quick = normalise(whisper.decode(pcm)), normalise(whisper.decode_quick(pcm))
        assert quick.split()[0] == sentence.split()[0], (quick, full)
        assert len(set(quick.split()) ^ set(full.split())) <= 4, (quick, full)  # a word or two
        assert len(quick.split()) <= len(sentence.split()) + 2, quick  # no loop


async def test_the_encoder_reads_the_utterance_and_its_silence(whisper: WhisperSTT,
                                                              monkeypatch: pytest.MonkeyPatch
                                                              ) -> None:
    """A final's window is the utterance + ``pad_s`` of silence, at least ``context_s``: a short
    utterance is read as the 7 s floor, a long one whole with 1.5 s after it (not a fixed 10 s),
    and both are transcribed once (with little silence after it Whisper tends to write an
    utterance twice; the beam search's patience and length penalty stop that)."""
    frames: list[int] = []
    encode = whisper._model.encode

    def counted(features: np.ndarray) -> object:
        frames.append(int(features.shape[-1]))
        return encode(features)

    monkeypatch.setattr(whisper._model, "encode", counted)
    assert (whisper.context_frames, whisper.pad_frames) == (700, 150)  # the settings' defaults
    for sentence in ("what time is it", "send a message to john saying that i am running about "
                     "ten minutes late today because the train is slow"):
        pcm = to_mono16k(await EspeakTTS(wpm=170).synthesize(sentence).collect())
        heard = normalise(whisper.decode(pcm))
        assert len(set(heard.split()) ^ set(sentence.split())) <= 4, heard  # a word or two
        assert len(heard.split()) <= len(sentence.split()) + 1, heard  # said once
        audio_frames = len(pcm) // 2 // 160 + 1
        expected = max(700, audio_frames + 150)
        assert abs(frames[-1] - expected) <= 2 and frames[-1] % 2 == 0, (frames, expected)
    assert frames[0] == 700 and 700 < frames[1] < 1000  # the long one: over 7 s, under 10


async def test_whisper_on_silence_is_empty(whisper: WhisperSTT) -> None:
    silence = rtc.AudioFrame(bytes(2 * 16_000), 16_000, 1, 16_000)
    assert (await whisper.recognize(silence)).alternatives[0].text == ""


async def test_a_recognition_over_its_time_bound_fails_cleanly(whisper: WhisperSTT) -> None:
    speech = await EspeakTTS().synthesize("tell me a story").collect()
    whisper.timeout_s = 0.001
    try:
        with pytest.raises(APIError, match="took over") as info:
            await whisper.recognize(speech)
    finally:
        whisper.timeout_s = 5.0
    assert not info.value.retryable
    # the timed-out decode finishes in its thread; the next utterance is transcribed
    assert normalise((await whisper.recognize(speech)).alternatives[0].text) == "tell me a story"


def test_the_wheel_model_is_the_pinned_one() -> None:
    model_dir = default_model_dir()
    verify_model(model_dir, TINY_EN_SHA256)  # does not raise
    assert model_pin(VoiceSettings(voice_stt_model="tiny.en")) == (None, TINY_EN_SHA256)
    s = VoiceSettings()
    assert model_pin(s) == (None, PACKAGED[s.voice_stt_model].sha256)


def test_every_packaged_model_is_a_setting_choice() -> None:
    assert tuple(PACKAGED) == WHISPER_MODELS
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_STT_MODEL"):
        VoiceSettings(voice_stt_model="small").validate()
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_STT_CONTEXT_S"):
        VoiceSettings(voice_stt_context_s=2).validate()


def test_split_weights_are_pinned_as_one_file(tmp_path: Path) -> None:
    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    parts[0].write_bytes(b"first half ")
    parts[1].write_bytes(b"second half")
    whole = hashlib.sha256(b"first half second half").hexdigest()
    assert read_weights(parts, whole) == b"first half second half"
    with pytest.raises(SpeechError, match="expected " + whole):
        read_weights(parts[::-1], whole)  # the same bytes in the wrong order
    with pytest.raises(SpeechError, match=r"model\.bin\.part3 missing"):
        read_weights([*parts, tmp_path / "model.bin.part3"], whole)
    with pytest.raises(SpeechError, match="no packaged Whisper model 'small'"):
        model_paths("small")


def test_other_model_files_are_refused_unless_pinned(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"not the pinned weights")
    with pytest.raises(SpeechError, match="expected " + TINY_EN_SHA256):
        verify_model(tmp_path, TINY_EN_SHA256)
    with pytest.raises(SpeechError, match=r"model\.bin missing"):
        verify_model(tmp_path / "nowhere", TINY_EN_SHA256)
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_STT_MODEL_SHA256"):
        VoiceSettings(voice_stt_model_dir=str(tmp_path)).validate()
    s = VoiceSettings(voice_stt_model_dir=str(tmp_path), voice_stt_model_sha256="none")
    s.validate()
    assert model_pin(s) == (tmp_path, "")


def test_the_recogniser_is_chosen_by_setting() -> None:
    assert isinstance(worker.recogniser(VoiceSettings(voice_stt="pocketsphinx")), PocketsphinxSTT)
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_STT"):
        VoiceSettings(voice_stt="cloud").validate()
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_STT_MIN_SILENCE_S"):
        VoiceSettings(voice_stt_min_silence_s=0.5, voice_min_silence_s=0.35).validate()
