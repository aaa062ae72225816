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
from tests.voice.test_preemptive import _log_until
from voice.caller import Caller, speech_48k
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
        await _answered_after(bus, c.sid, first["offset"])
    assert "Traceback" not in c.worker.text(), c.worker.log_path


async def test_talking_while_the_agent_is_silent_mid_reply_cancels_the_turn(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    """Issue 16: the agent said its first sentence and is silent, its reply still streaming
    (the model pauses 15 s); the caller talks. The turn must be cancelled (before, nothing
    was playing to interrupt and chat clients got the whole reply the caller never heard)."""
    cluster.worker(agent="tests.agents_fixtures:pausing", PAUSE_S="15")
    async with voice_call(cluster, livekit, "dave", prefix="gap") as c:
        chat, caller = c.chat, c.joined
        await caller.say(await speech_48k("tell me a story"))
        first = await chat.until("user", timeout=20, source="voice")
        await asyncio.wait_for(caller.heard_agent.wait(), 30)
        spoke_at = caller.first_loud_after(0)
        await asyncio.wait_for(_quiet(caller, 1.0), 15)  # the first sentence is said
        # past the echo-canceller warm-up, counted from the agent's first speech
        await asyncio.sleep(max(0.0, spoke_at + WARMUP_S + 0.5 - time.monotonic()))
        silent_from = caller.last_loud()
        # a whole question: a three-word one was once heard as "What I visit?" through the room
        interruption = await speech_48k("what time is it right now")
        talked_at = time.monotonic()
        await caller.say(interruption)
        assert caller.loud_between(silent_from + 0.1, talked_at) == 0, "the agent was not silent"

        cancelled = await chat.until("cancelled", timeout=20, turn=first["offset"])
        assert cancelled["text"].startswith("Once upon a time")
        assert "storm" not in cancelled["text"]
        assert time.monotonic() - talked_at < 10, "cancelled by the time-out, not the caller"
        await _answered_after(bus, c.sid, first["offset"])
    assert "Traceback" not in c.worker.text(), c.worker.log_path


async def _answered_after(bus: Bus, sid: str, first: int) -> None:
    """The interruption's turn, after turn ``first``, answered by the clock tool. A busy box may
    end a first part of it at a pause, sent preemptively and cancelled when the caller goes on
    (docs/protocol.md): every earlier part cancelled, the last answered."""
    events = await _log_until(bus, sid, lambda evs: any(
        e["type"] == "reply" and e["turn"] > first for e in evs))
    users = [e for e in events if e["type"] == "user" and e["source"] == "voice"
             and e["offset"] > first]
    ended = {e["turn"]: e for e in events if e["type"] in ("reply", "cancelled")}
    ends = [ended.get(u["offset"], {}).get("type") for u in users]
    assert ends == ["cancelled"] * (len(users) - 1) + ["reply"], (users, ended)
    assert "time" in normalise(users[-1]["text"]), users
    assert "The tool says:" in ended[users[-1]["offset"]]["text"]


async def _quiet(caller: Caller, quiet_s: float) -> None:
    """Until the agent's audio has been quiet for ``quiet_s``."""
    while time.monotonic() - caller.last_loud() <= quiet_s:  # noqa: ASYNC110 (polls audio)
        await asyncio.sleep(0.05)
