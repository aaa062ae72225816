"""Failures during a call, with real processes: the caller hears or sees an error state, the
session log records it, and nothing hangs.

* speech recognition fails (a time bound it cannot meet): the caller hears "sorry" and gets a
  ``stt_failed`` message; the log has a ``call`` error; the call goes on;
* speech synthesis fails (a time bound it cannot meet): nothing can be spoken, so the caller
  gets a ``tts_failed`` message; the turn's reply still reaches the chat client;
* the voice worker is killed mid-call: the caller sees the agent leave, and the turn it had
  submitted is still answered to the chat client of the session.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from sessions.bus import Bus
from tests.conftest import Client, Cluster
from tests.voice.conftest import voice_call
from tests.voice.livekit_server import LiveKitServer
from voice.caller import Caller, speech_48k

pytestmark = pytest.mark.e2e

SENTENCE = "tell me about the weather in paris tomorrow"


async def event(chat: Client, kind: str, timeout: float, **match: object) -> dict[str, object]:
    """The first ``kind`` event, already received (waiting for another) or to come."""
    for f in chat.frames:
        if f["type"] == kind and all(f.get(k) == v for k, v in match.items()):
            return f
    return await chat.until(kind, timeout, **match)


async def message(caller: Caller, state: str, within: float) -> dict[str, object]:
    async with asyncio.timeout(within):
        while True:
            for m in caller.messages:
                if m["state"] == state:
                    return m
            await asyncio.sleep(0.05)


async def test_recognition_failure_is_spoken_shown_and_logged(
        cluster: Cluster, livekit: LiveKitServer) -> None:
    cluster.worker()
    async with voice_call(cluster, livekit, "dave", prefix="err",
                          AGENTIA_VOICE_STT_TIMEOUT_S="0.001") as c:
        await c.joined.say(await speech_48k(SENTENCE))
        logged = await c.chat.until("call", timeout=20, state="error")
        assert logged["code"] == "stt_failed" and "took over" in logged["message"]
        shown = await message(c.joined, "error", 10)
        assert shown["code"] == "stt_failed"
        await asyncio.wait_for(c.joined.heard_agent.wait(), 20)  # "sorry, I did not catch..."
        assert not any(f["type"] == "user" for f in c.chat.frames)  # no turn was made up
        # the call goes on: the agent listens again
        await c.joined.wait_answered(0.0, 20, quiet_s=0.3)
        assert not c.joined.agent_left.is_set()


async def test_synthesis_failure_is_shown_and_logged_and_the_turn_answered(
        cluster: Cluster, livekit: LiveKitServer) -> None:
    cluster.worker()
    async with voice_call(cluster, livekit, "dave", prefix="err",
                          AGENTIA_VOICE_TTS_TIMEOUT_S="0.0001") as c:
        spoken = await c.joined.say(await speech_48k(SENTENCE))
        user = await c.chat.until("user", timeout=20, source="voice")
        await c.chat.until("reply", timeout=20, turn=user["offset"])
        logged = await event(c.chat, "call", 20, state="error")
        assert logged["code"] == "tts_failed"
        shown = await message(c.joined, "error", 10)
        assert shown["code"] == "tts_failed"
        assert c.joined.last_loud() < spoken  # nothing was heard after the caller spoke


async def test_a_killed_voice_worker_leaves_the_room_and_the_turn_is_answered(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    cluster.worker(agent="tests.agents_fixtures:slow", SLOW_DELAY="0.15")
    # a job process per call: it outlives its worker long enough to record the loss (with
    # the thread executor the calls die with the worker: docs/voice.md)
    async with voice_call(cluster, livekit, "dave", prefix="err",
                          AGENTIA_VOICE_EXECUTOR="process") as c:
        await c.joined.say(await speech_48k(SENTENCE))
        user = await c.chat.until("user", timeout=20, source="voice")
        await event(c.chat, "chunk", 20, turn=user["offset"])
        os.kill(c.worker.proc.pid, signal.SIGKILL)  # mid-turn
        killed = time.monotonic()
        c.worker.proc.wait(5)
        ended = await event(c.chat, "call", 10, state="ended")
        assert ended["reason"] == "worker_lost"
        await asyncio.wait_for(c.joined.agent_left.wait(), 10)
        print("LEFT after", c.joined.left_at - killed)
        # the turn was submitted before: the agent workers still answer it
        reply = await event(c.chat, "reply", 30, turn=user["offset"])
        assert reply["text"]
