"""Calls that reach an idle voice worker at the same moment are all taken (voice/server_load.py).

Real LiveKit server, real voice worker with ``AGENTIA_VOICE_MAX_CALLS=4`` (``agentia up``'s
default) and no call yet: four calls are started at once (four callers pressing Talk
together). livekit-agents estimated each accepted-but-not-started call at the whole threshold
when the worker had none running, so it answered "not available" to the other three and
LiveKit had no worker for them (``NoVoiceAgent``); now each is a quarter of the budget.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from tests.conftest import Client, Cluster
from tests.voice.conftest import VoiceWorker, voice_env, voice_settings
from tests.voice.livekit_server import LiveKitServer
from voice.caller import Caller
from voice.tokens import start_call

pytestmark = pytest.mark.e2e

CALLS = 4


async def test_calls_that_arrive_together_at_an_idle_worker_are_all_taken(
        cluster: Cluster, livekit: LiveKitServer) -> None:
    edge = cluster.edge()
    env = {**voice_env(cluster, livekit), "AGENTIA_VOICE_MAX_CALLS": str(CALLS)}
    worker = VoiceWorker(env)
    chats: list[Client] = []
    callers: list[Caller] = []
    try:
        sids = [f"burst-{uuid.uuid4().hex[:8]}" for _ in range(CALLS)]
        for n, sid in enumerate(sids):
            chats.append(await Client.open(edge.port, user=f"u{n}", session=sid))
            await chats[-1].until("welcome")
        s = voice_settings(env)
        calls = await asyncio.gather(*(start_call(s, sid, f"u{n}")
                                       for n, sid in enumerate(sids)))
        callers = list(await asyncio.gather(*(Caller.join(c.url, c.token) for c in calls)))
        for caller in callers:
            caller.open_microphone()
        await asyncio.gather(*(caller.ready(30) for caller in callers))
        text = worker.text()
        assert text.count("call of session burst-") == CALLS, text[-3000:]
    finally:
        for caller in callers:
            await caller.leave()
        for chat in chats:
            await chat.close()
        worker.stop()
    assert "Traceback" not in worker.text()
