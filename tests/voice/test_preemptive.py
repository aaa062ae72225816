"""Preemptive turns in a real room (``AGENTIA_VOICE_PREEMPTIVE``, on by default).

The turn is sent to the agent as soon as its final transcript is ready, before the turn's end
(the VAD's silence) is confirmed, and its audio is held until it is. A caller who goes on
speaking cancels that turn (chat clients see ``cancelled``), and the whole utterance becomes
the turn; the held audio is never played.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from sessions.bus import Bus
from tests.conftest import Cluster
from tests.voice.conftest import voice_call
from tests.voice.livekit_server import LiveKitServer
from voice.caller import speech_48k
from voice.speech import normalise

pytestmark = pytest.mark.e2e

TURN_SILENCE_S = 3.0
"""The turn's end in these calls: long enough that the first part's transcript (~0.3 s after
it, a few seconds on a starved machine) always comes before it."""
LONG_TURN = {"AGENTIA_VOICE_MIN_SILENCE_S": str(TURN_SILENCE_S),
             "AGENTIA_VOICE_FINISHED_SILENCE_S": str(TURN_SILENCE_S)}
"""Every turn ends after :data:`TURN_SILENCE_S`, finished sentence or not."""
UNFINISHED_WAIT = {"AGENTIA_VOICE_TURN_DETECTION": "sentence",
                   "AGENTIA_VOICE_MIN_SILENCE_S": str(TURN_SILENCE_S)}
"""A finished sentence ends the turn after the default 0.2 s, an unfinished one after
:data:`TURN_SILENCE_S` (voice/turn_end.py)."""


async def test_a_caller_who_goes_on_speaking_cancels_the_preemptive_turn(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    # about 30 words at 0.3 s: the first part's reply cannot finish before it is cancelled
    cluster.worker(agent="tests.agents_fixtures:slow", SLOW_DELAY="0.3")
    async with voice_call(cluster, livekit, "frank", prefix="pre",
                          **LONG_TURN) as c:
        chat, caller = c.chat, c.joined
        first_end = await caller.say(await speech_48k("i would like to change my password"))
        first = await chat.until("user", timeout=20, source="voice")
        # sent before the turn's end: the caller has been silent for less than its silence
        assert time.monotonic() - first_end < TURN_SILENCE_S, "not sent preemptively"
        assert "password" in normalise(first["text"]) and "name" not in first["text"].lower()

        second_end = await caller.say(await speech_48k("and my user name"))
        events = await _log_until(bus, c.sid, lambda evs: any(
            e["type"] == "reply" and e["turn"] > first["offset"] for e in evs))
        users = [e for e in events if e["type"] == "user" and e["source"] == "voice"]
        ended = {e["turn"]: e["type"] for e in events if e["type"] in ("reply", "cancelled")}
        # every turn but the last was cancelled (the first part; a part of the second, if the
        # recogniser cut it), and the last, answered, is the whole utterance
        assert [ended.get(u["offset"]) for u in users] == ["cancelled"] * (len(users) - 1) + [
            "reply"], (users, ended)
        heard = normalise(users[-1]["text"])
        assert "password" in heard and "name" in heard, heard
        # the first part's reply was synthesised but held, and never played
        assert caller.loud_between(first_end, second_end) == 0, "held audio was played"
        await asyncio.wait_for(caller.heard_agent.wait(), 30)
        assert caller.first_loud_after(second_end) - second_end > TURN_SILENCE_S - 0.5
    assert "Traceback" not in c.worker.text(), c.worker.log_path


async def test_a_preemptive_turn_is_answered_once_the_turn_ends(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    """One utterance: one turn, sent before the turn's end, answered with its audio after it
    (held until then), nothing cancelled."""
    cluster.worker()
    async with voice_call(cluster, livekit, "gina", prefix="pre",
                          **LONG_TURN) as c:
        chat, caller = c.chat, c.joined
        end = await caller.say(await speech_48k("where is the nearest train station"))
        user = await chat.until("user", timeout=20, source="voice")
        sent_after = time.monotonic() - end
        reply = await chat.until("reply", timeout=30, turn=user["offset"])
        assert normalise(user["text"]) in normalise(reply["text"])
        await asyncio.wait_for(caller.heard_agent.wait(), 30)
        heard_after = caller.first_loud_after(end) - end
        # sent early, heard only once the caller's silence ended the turn
        assert sent_after < TURN_SILENCE_S <= heard_after, (sent_after, heard_after)
        assert caller.loud_between(end, end + TURN_SILENCE_S) == 0
        await asyncio.sleep(1.0)
        log = await bus.replay(c.sid, 0, None)
        assert b'"cancelled"' not in b"".join(e for _, e in log.events)
    assert "Traceback" not in c.worker.text(), c.worker.log_path


async def test_a_finished_sentence_ends_the_turn_after_the_short_silence(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    """Whisper writes "Where is the nearest train station?": the turn ends after 0.2 s of
    silence, not the 3 s an unfinished one waits (with ``vad`` detection it waited them)."""
    cluster.worker()
    async with voice_call(cluster, livekit, "hana", prefix="pre", **UNFINISHED_WAIT) as c:
        chat, caller = c.chat, c.joined
        end = await caller.say(await speech_48k("where is the nearest train station"))
        user = await chat.until("user", timeout=20, source="voice")
        assert user["text"].rstrip().endswith("?"), user["text"]
        await chat.until("reply", timeout=30, turn=user["offset"])
        await asyncio.wait_for(caller.heard_agent.wait(), 30)
        heard_after = caller.first_loud_after(end) - end
        assert heard_after < TURN_SILENCE_S - 0.5, heard_after
    assert "Traceback" not in c.worker.text(), c.worker.log_path


async def test_an_unfinished_sentence_keeps_the_full_silence_and_makes_one_turn(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    """ "I would like to change my", a pause of 1 s, "password": the first part does not end
    a sentence, its turn waits the full silence, the caller resumes within it and the whole
    utterance is one answered turn (the first part's preemptive turn cancelled)."""
    # a slow reply: the first part's cannot finish before the caller resumes and cancels it
    cluster.worker(agent="tests.agents_fixtures:slow", SLOW_DELAY="0.3")
    async with voice_call(cluster, livekit, "ivan", prefix="pre", **UNFINISHED_WAIT) as c:
        caller = c.joined
        first_end = await caller.say(await speech_48k("i would like to change my"))
        await asyncio.sleep(1.0)
        second_end = await caller.say(await speech_48k("password"))
        events = await _log_until(bus, c.sid, lambda evs: any(
            e["type"] == "reply" and "password" in e["text"].lower() for e in evs))
        users = [e for e in events if e["type"] == "user" and e["source"] == "voice"]
        ended = {e["turn"]: e["type"] for e in events if e["type"] in ("reply", "cancelled")}
        assert [ended.get(u["offset"]) for u in users] == ["cancelled"] * (len(users) - 1) + [
            "reply"], (users, ended)
        heard = normalise(users[-1]["text"])
        assert "change" in heard and "password" in heard, heard
        assert caller.loud_between(first_end, second_end) == 0, "the first part was answered"
        await asyncio.wait_for(caller.heard_agent.wait(), 30)
    assert "Traceback" not in c.worker.text(), c.worker.log_path


async def _log_until(bus: Bus, sid: str, done: Callable[[list[dict[str, Any]]], bool],
                     within: float = 40.0) -> list[dict[str, Any]]:
    """The session's log once ``done`` holds for it (read every 0.1 s)."""
    async with asyncio.timeout(within):
        while True:
            log = await bus.replay(sid, 0, None)
            events = [{"offset": o, **orjson.loads(e)} for o, e in log.events]
            if done(events):
                return events
            await asyncio.sleep(0.1)
