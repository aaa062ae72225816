"""Barge-in in a real room: the caller talks over the agent's long answer.

The agent (demo model, slowed down) is still writing its reply when its first sentence is
spoken; the caller then says something else. The agent's audio must stop, the running turn
must be cancelled on the bus (a chat client of the session sees ``cancelled``), and what the
caller said becomes the next turn.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from sessions.bus import Bus
from tests.conftest import Cluster
from tests.voice.conftest import voice_call
from tests.voice.livekit_server import LiveKitServer
from voice.caller import speech_48k
from voice.settings import VoiceSettings
from voice.speech import normalise

pytestmark = pytest.mark.e2e

WARMUP_S = VoiceSettings().voice_aec_warmup_s

STOP_WITHIN_S = 1.5
"""From the start of the caller's speech to the agent's silence: VAD (0.5 s of speech counts as
an interruption) plus the room's audio path, with room for a loaded machine."""


async def test_talking_over_the_agent_cancels_its_turn_and_starts_the_next(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    # about 30 words at 0.5 s: the reply is still being written while its start is spoken
    cluster.worker(agent="tests.agents_fixtures:slow", SLOW_DELAY="0.5")
    async with voice_call(cluster, livekit, "carol", prefix="barge") as c:
        chat, caller = c.chat, c.joined
        await caller.say(await speech_48k("tell me a long story about the sea"))
        first = await chat.until("user", timeout=20, source="voice")
        await asyncio.wait_for(caller.heard_agent.wait(), 30)  # the agent is speaking
        # past the first seconds of its speech, where an interruption is taken for echo
        await asyncio.sleep(WARMUP_S + 0.5)
        interruption = await speech_48k("actually never mind that, what time is it right now")
        barge_at = time.monotonic()
        spoken = await caller.say(interruption)
        assert spoken - barge_at > STOP_WITHIN_S + 1.0  # the check below has a window

        # the audio stopped while the caller was still talking
        assert caller.loud_between(barge_at + STOP_WITHIN_S, spoken) == 0, \
            "the agent kept talking over the caller"
        cancelled = await chat.until("cancelled", timeout=20, turn=first["offset"])
        assert cancelled["text"]  # it had started answering
        second = await chat.until("user", timeout=20, source="voice")
        assert second["offset"] > first["offset"] and "time" in normalise(second["text"])
        reply = await chat.until("reply", timeout=30, turn=second["offset"])
        assert "The tool says:" in reply["text"]
    assert "Traceback" not in c.worker.text(), c.worker.log_path
