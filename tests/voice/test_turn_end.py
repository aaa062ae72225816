"""The finished-sentence rule (voice/turn_end.py) and how the worker wires it: no room, no loop
beyond the detector's own awaitables. The behaviour in a real room is in test_preemptive.py."""

from __future__ import annotations

import pytest
from livekit.agents import llm

from agentia.settings import SettingsError, from_env
from voice.settings import VoiceSettings
from voice.turn_end import (
    FINISHED,
    THRESHOLD,
    UNFINISHED,
    SentenceEnd,
    endpointing,
    judge_for,
    never,
    sounds_finished,
    turn_detector,
    turn_vad_silence,
    whole_phrase,
)


@pytest.mark.parametrize("text", [
    "Where is the nearest train station?", "Tell me a story.", "Stop!", "Yes, I do.",
    "Turn the lights on.", "Yes, it is.", "How are you?", "Thank you very much.",
    '"Good morning."', "I like that.", "No.", "Set a timer for 10 minutes.",
])
def test_a_sentence_that_ends_sounds_finished(text: str) -> None:
    assert sounds_finished(text)


@pytest.mark.parametrize("text", [
    "I would like to change my", "I would like to change my password and", "",
    "I would like to...", "I would like to change my…", "Book a table for.",
    "I want to.", "Call Dr.", "Turn off the lights in the.", "Where is the?",
    "Because.", "um.", "What is the weather in?", "What is?", "Where is?",
    "Where are you from?",  # a question may: it waits the full silence (only time lost)
    "hello agent how are you",  # no punctuation: nothing says it ended
    "  ", "...", "?",
])
def test_a_sentence_left_hanging_does_not(text: str) -> None:
    assert not sounds_finished(text)


def test_each_recogniser_gets_its_rule() -> None:
    assert judge_for("whisper", "phrases.txt") is sounds_finished
    assert judge_for("openai", "") is sounds_finished
    # a phrase grammar accepts whole phrases only; an open vocabulary writes no punctuation
    assert judge_for("pocketsphinx", "phrases.txt") is whole_phrase
    assert judge_for("pocketsphinx", "") is never
    assert whole_phrase("what time is it") and not whole_phrase(" ")
    assert not never("Tell me a story.")


async def test_the_detector_answers_on_the_turns_last_user_message() -> None:
    ends = SentenceEnd()
    ctx = llm.ChatContext()
    ctx.add_message(role="user", content="Tell me a story.")
    ctx.add_message(role="assistant", content="Once upon a time.")
    assert await ends.supports_language("en")
    assert await ends.unlikely_threshold("en") == THRESHOLD
    ctx.add_message(role="user", content="I would like to change my")
    assert await ends.predict_end_of_turn(ctx) == UNFINISHED < THRESHOLD
    ctx.add_message(role="user", content="I would like to change my password.")
    assert await ends.predict_end_of_turn(ctx) == FINISHED > THRESHOLD
    assert await ends.predict_end_of_turn(llm.ChatContext()) == UNFINISHED
    assert ends.summary() == {"finished": 1, "unfinished": 2}


def test_vad_detection_is_the_default_and_sentence_sets_both_waits(
        monkeypatch: pytest.MonkeyPatch) -> None:
    assert from_env(VoiceSettings).voice_turn_detection == "vad"
    monkeypatch.setenv("AGENTIA_VOICE_TURN_DETECTION", "sentence")
    s = from_env(VoiceSettings)
    assert isinstance(turn_detector(s), SentenceEnd)
    # the turn VAD reports the end of speech at the short silence, so that it can act
    assert turn_vad_silence(s) == s.voice_finished_silence_s == 0.2
    assert endpointing(s) == {"min_delay": 0.2, "max_delay": s.voice_min_silence_s}
    monkeypatch.setenv("AGENTIA_VOICE_TURN_DETECTION", "vad")
    s = from_env(VoiceSettings)
    assert turn_detector(s) == "vad" and turn_vad_silence(s) == 0.35
    assert endpointing(s) == {"min_delay": s.voice_endpoint_delay_s, "max_delay": 3.0}


@pytest.mark.parametrize(("name", "value"), [
    ("AGENTIA_VOICE_TURN_DETECTION", "punctuation"),
    ("AGENTIA_VOICE_FINISHED_SILENCE_S", "0.05"),
    ("AGENTIA_VOICE_FINISHED_SILENCE_S", "0.5"),  # above the full silence, 0.35
])
def test_bad_turn_settings_are_refused(monkeypatch: pytest.MonkeyPatch, name: str,
                                       value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=name):
        from_env(VoiceSettings)
