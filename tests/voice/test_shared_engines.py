"""Calls as threads of one voice worker (the default executor) share its speech engines.

Real LiveKit server, real voice worker: two calls of two sessions at once, each caller says a
sentence at the same moment; both are transcribed right and answered in their own room, both
calls ran in the worker's own process (no job process), the engines were loaded once, and the
worker's memory grew by far less than a job process (450-520 MB) for the second call.
"""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest

from sessions.bus import Bus
from tests.conftest import Client, Cluster
from tests.voice.conftest import voice_call, voice_settings
from tests.voice.livekit_server import LiveKitServer
from voice.caller import Caller, speech_48k
from voice.speech import normalise
from voice.tokens import start_call

pytestmark = pytest.mark.e2e

SENTENCES = ("tell me about the weather in paris tomorrow", "tell me a story")


def pss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("Pss:")) / 1024


async def test_two_calls_at_once_share_one_process_and_its_engines(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    cluster.worker()
    async with voice_call(cluster, livekit, "alice", prefix="share") as c:
        worker_pid = c.worker.proc.pid
        one_call = pss_mib(worker_pid)
        edge = cluster.edges[0]
        sid2 = f"share-{uuid.uuid4().hex[:8]}"
        chat2 = await Client.open(edge.port, user="bob", session=sid2)
        caller2: Caller | None = None
        try:
            await chat2.until("welcome")
            call2 = await start_call(voice_settings(c.env), sid2, "bob")
            caller2 = await Caller.join(call2.url, call2.token)
            caller2.open_microphone()
            await caller2.ready(20)
            await asyncio.sleep(0.5)
            pcm = [await speech_48k(s) for s in SENTENCES]
            spoken = await asyncio.gather(c.joined.say(pcm[0]), caller2.say(pcm[1]))
            for chat, said in ((c.chat, SENTENCES[0]), (chat2, SENTENCES[1])):
                user = await chat.until("user", timeout=30, source="voice")
                assert normalise(user["text"]) == said
                await chat.until("reply", timeout=30, turn=user["offset"])
            for caller, at in zip((c.joined, caller2), spoken, strict=True):
                await asyncio.wait_for(caller.heard_agent.wait(), 30)
                print(f"\nlatency {1000 * (caller.first_loud_after(at) - at):.0f} ms")
            two_calls = pss_mib(worker_pid)
        finally:
            if caller2 is not None:
                await caller2.leave()
            await chat2.close()
        text = c.worker.text()
    pids = set(re.findall(r"call of session share-\w+ in job process (\d+)", text))
    assert pids == {str(worker_pid)}, pids  # both calls are threads of the worker
    assert len(re.findall(r"speech engines loaded in process", text)) == 1
    print(f"worker PSS: {one_call:.0f} MiB with one call, {two_calls:.0f} MiB with two")
    assert two_calls - one_call < 150
    assert "Traceback" not in text
