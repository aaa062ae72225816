"""Interim transcripts in a real room (issue 16): while the caller speaks a long sentence, the
session's chat client gets the utterance so far as ``transcript`` frames with ``final: false``
(off the log), then the final transcript (logged) that replaces them; the log and a resume hold
only the final one.

Real processes: Redis, an edge, an agent worker, the LiveKit server, the voice worker (Whisper).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from sessions.bus import Bus
from tests.conftest import Client
from tests.voice.conftest import voice_call
from tests.voice.livekit_server import LiveKitServer
from tests.voice.test_call import log_of
from voice.caller import speech_48k
from voice.speech import normalise

pytestmark = pytest.mark.e2e

LONG = "please tell me about the weather in paris and in london for the whole of next week"
"""~4.5 s at 170 words a minute, no comma: one utterance."""


async def frames_until_final(chat: Client, timeout: float = 30) -> list[dict[str, Any]]:
    """The chat client's frames up to the caller's first final transcript."""
    got = []
    async with asyncio.timeout(timeout):
        while True:
            f = await chat.recv(timeout)
            got.append(f)
            if f["type"] == "transcript" and f.get("role") == "user" and f.get("final"):
                return got


async def test_the_chat_client_sees_the_caller_live_then_the_final_transcript(
        cluster: Any, bus: Bus, livekit: LiveKitServer) -> None:
    cluster.worker()
    async with voice_call(cluster, livekit, "ivy", prefix="interim") as c:
        pcm = await speech_48k(LONG)
        assert len(pcm) / 48_000 >= 3.0
        await c.joined.say(pcm)
        got = await frames_until_final(c.chat)
        interims = [f for f in got if f["type"] == "transcript" and f["final"] is False]
        final = got[-1]
        assert interims, [f["type"] for f in got]
        assert all("offset" not in f and f["role"] == "user" and f["source"] == "voice"
                   and f["utterance"] == interims[0]["utterance"] and f["text"]
                   for f in interims), interims
        # each replaces the last: the utterance so far, towards the final
        print(f"\nINTERIMS {[f['text'] for f in interims]} FINAL {final['text']!r}")
        last = set(normalise(interims[-1]["text"]).split())
        assert last & set(normalise(final["text"]).split()), got
        # (what Whisper makes of the words is test_call.py's and test_wer.py's business: on a
        # loaded machine "weather in paris" came out "wherever it is")

        events = await log_of(bus, c.sid)
        said = [e for e in events if e["type"] == "transcript" and e["role"] == "user"]
        assert [e["final"] for e in said] == [True] and said[0]["offset"] == final["offset"]
        # a client resuming from 0 gets the final one only
        await c.chat.send(type="resume", after=0, id="again")
        resumed = []
        while (f := await c.chat.recv())["type"] != "resumed":
            resumed.append(f)
        assert [e.get("final") for e in resumed if e["type"] == "transcript"
                and e["role"] == "user"] == [True]
    assert "Traceback" not in c.worker.text(), c.worker.log_path
