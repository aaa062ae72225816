"""Word error rate: the benchmark's arithmetic, and the shipped STT on espeak-ng sentences."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest

from loadtest.bench_wer import (
    VOICES,
    Errors,
    candidate,
    sentences,
    speak,
    utterances,
    wer,
    word_errors,
)
from voice import worker
from voice.settings import VoiceSettings
from voice.speech import SpeechError, normalise, number_words
from voice.stt_whisper import PACKAGED, WhisperSTT, without_loop


def test_identical_words_have_no_errors() -> None:
    assert word_errors("turn off the lights", "turn off the lights") == Errors()


def test_each_kind_of_error_is_counted() -> None:
    assert word_errors("turn off the lights", "turn of the lights") == Errors(sub=1)
    assert word_errors("turn off the lights", "turn the lights") == Errors(dele=1)
    assert word_errors("turn off the lights", "turn off all the lights") == Errors(ins=1)
    assert word_errors("a b c", "") == Errors(dele=3)
    assert word_errors("", "a b") == Errors(ins=2)


def test_the_fewest_edits_are_found() -> None:
    # "Turn off my life, Simba Kitchen" for "turn off the lights in the kitchen": 3
    # substitutions (the, lights, in -> my, life, simba) and one deletion, not 5 edits
    e = word_errors("turn off the lights in the kitchen", "turn off my life simba kitchen")
    assert (e.total, e.sub, e.dele, e.ins) == (4, 3, 1, 0)
    assert word_errors("a b c d", "b c d e") == Errors(dele=1, ins=1)


def test_wer_is_errors_over_reference_words_after_normalising() -> None:
    assert wer([("set a timer for ten minutes", "Set a timer for 10 minutes.")]) == 0.0
    assert wer([("a b c d", "a b c x"), ("e f g h i j", "e f g h i j")]) == pytest.approx(0.1)
    assert wer([]) == 0.0


def test_numbers_are_compared_as_words() -> None:
    assert normalise("Please book a table for 2 at 7:30.") == \
        "please book a table for two at seven thirty"
    assert normalise("the 21st, 1,250 and 100") == \
        "the twenty first one thousand two hundred fifty and one hundred"
    assert [number_words(n) for n in (0, 13, 40, 99, 305)] == \
        ["zero", "thirteen", "forty", "ninety nine", "three hundred five"]


def test_the_sentence_set_is_large_and_spoken_by_several_voices() -> None:
    texts = sentences()
    assert len(texts) >= 50 and len(set(texts)) == len(texts)
    assert all(re.fullmatch(r"[a-z' ]+", t) for t in texts)  # numbers in words
    assert len({v for v, _ in VOICES}) >= 3 and {w for _, w in VOICES} <= set(range(140, 191))
    threads = VoiceSettings().voice_stt_threads  # the worker's unless a candidate says
    assert candidate("before") == {"voice_stt_model": "tiny.en", "voice_stt_context_s": 30.0,
                                   "voice_stt_pad_s": 0.0, "voice_stt_beam": 1,
                                   "voice_stt_threads": threads, "voice_stt_compute_type": "auto"}
    assert candidate("after") == {"voice_stt_model": "base", "voice_stt_context_s": 7.0,
                                  "voice_stt_pad_s": 1.5, "voice_stt_beam": 5,
                                  "voice_stt_threads": threads, "voice_stt_compute_type": "auto"}
    assert candidate("base@5+1/2x1") == {"voice_stt_model": "base", "voice_stt_context_s": 5.0,
                                         "voice_stt_pad_s": 1.0, "voice_stt_beam": 2,
                                         "voice_stt_threads": 1, "voice_stt_compute_type": "auto"}
    assert candidate("after:float32") == {**candidate("after"), "voice_stt_compute_type": "float32"}
    assert candidate("base@7+1.5/3x2:int8_float32") == {
        "voice_stt_model": "base", "voice_stt_context_s": 7.0, "voice_stt_pad_s": 1.5,
        "voice_stt_beam": 3, "voice_stt_threads": 2, "voice_stt_compute_type": "int8_float32"}


def test_espeak_speech_is_padded_as_the_vad_cuts_it() -> None:
    frame = speak("hello", "en-us", 175)
    assert frame.sample_rate == 48_000
    assert 0.9 < frame.samples_per_channel / 48_000 < 2.0  # 0.7 s of padding + the word


def test_tampered_weights_refuse_to_load() -> None:
    name = VoiceSettings().voice_stt_model
    with pytest.raises(SpeechError, match="expected " + "0" * 64):
        WhisperSTT(model=name, sha256="0" * 64)


async def test_the_shipped_stt_transcribes_espeak_sentences() -> None:
    """The default STT, made as the worker makes it, from pinned files, on the first 10
    sentences of the benchmark (20 utterances, ~150 words): WER at most the 8 % goal, every
    utterance in bounded time. Not 5: one en-gb utterance ("call my mother on the mobile
    phone") flips between right and 5 words wrong from one model instance to the next in one
    process (int8 kernels; seen with the 7 s window), 7 % of a 10-utterance sample alone."""
    s = VoiceSettings(voice_stt_timeout_s=30)
    worker.check_speech(s)  # the pinned hash, as at the worker's start
    stt = worker.recogniser(s)
    assert stt.model == f"whisper-ct2:{s.voice_stt_model}" and s.voice_stt_model in PACKAGED
    pairs = []
    cpu = time.process_time()  # not wall time: the shared box's load is not the model's
    for text, _voice, _wpm, audio in utterances(limit=10):
        pairs.append((text, (await stt.recognize(audio)).alternatives[0].text))
    assert time.process_time() - cpu < 60, "20 utterances should take seconds of CPU"
    assert wer(pairs) <= 0.08, pairs


def test_a_decoding_loop_is_kept_once() -> None:
    said = [11, 12, 13, 14, 15]
    assert without_loop(said + said + said[:3]) == said  # cut by the token budget mid-repeat
    assert without_loop(said + said) == said
    assert without_loop([*said, 16]) == [*said, 16]
    assert without_loop([7, 8, 7, 8, 7, 8]) == [7, 8, 7, 8, 7, 8]  # "yes, yes, yes" stays
    assert without_loop(said + said[:2]) == said + said[:2]  # a short echo is not a loop


async def test_utterances_decoded_in_one_batch_keep_their_words(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's engine pool decodes utterances that wait together in one batch
    (``WhisperSTT.decode_many``: one encoder and one ``generate`` call): each transcript is
    its own utterance's, the words as right as one at a time (one word more wrong at most), and
    the encoder read them as one batch."""
    from voice.speech import to_mono16k

    stt = worker.whisper(VoiceSettings(voice_stt_timeout_s=30))
    batches: list[int] = []
    encode = stt._model.encode

    def counted(features: np.ndarray) -> object:
        batches.append(int(features.shape[0]))
        return encode(features)

    monkeypatch.setattr(stt._model, "encode", counted)
    utts = utterances(limit=4)  # 8 utterances, two voices each
    pcms = [to_mono16k(u[3]) for u in utts]
    heard = stt.decode_many(pcms)
    assert batches == [4, 4]  # MAX_BATCH windows at a time
    alone = [stt.decode(pcm) for pcm in pcms]
    # as right as one at a time: one word more wrong at most (8 utterances are too few for the
    # 8 % goal itself: one slip is ~4 %; test_the_shipped_stt... and bench_wer hold the goal)
    words = sum(len(normalise(u[0]).split()) for u in utts)
    batched_wer = wer([(u[0], h) for u, h in zip(utts, heard, strict=True)])
    assert batched_wer <= wer([(u[0], h) for u, h in zip(utts, alone, strict=True)]) \
        + 1 / words + 1e-9, (heard, alone)
    for (said, *_), text in zip(utts, heard, strict=True):  # each to its own utterance
        words = set(normalise(text).split())
        assert max(sentences()[:4], key=lambda s: len(words & set(s.split()))) == said, text
