"""End to end: a caller in a LiveKit room and a chat client share one session.

Real processes and sockets: Redis, an edge, an agent worker (offline demo model), the LiveKit
server and the voice worker. The caller is a Python ``livekit`` participant that speaks with
espeak-ng; the test measures end of speech -> first agent audio at the caller.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
import pytest
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_AGENT_STATE

from sessions.bus import Bus
from tests.conftest import Client, Cluster
from tests.voice.conftest import VoiceWorker, voice_env, voice_settings
from tests.voice.livekit_server import LiveKitServer
from voice.speech import ESPEAK_RATE, espeak_pcm
from voice.tokens import start_call

pytestmark = pytest.mark.e2e

RATE = 48_000
FRAME = RATE // 50  # 20 ms
LOUD = 300.0  # RMS of int16 samples above which a frame counts as speech


@dataclass
class Caller:
    """A room participant with a microphone it feeds in real time and ears on the agent."""

    room: rtc.Room
    source: rtc.AudioSource
    heard: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, rms)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    agent_listening: asyncio.Event = field(default_factory=asyncio.Event)
    """The agent subscribed to our microphone and its pipeline says it is listening."""
    mic_subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    heard_agent: asyncio.Event = field(default_factory=asyncio.Event)
    listen_after: float = float("inf")
    """heard_agent is set by the first loud frame after this (monotonic) time."""
    queued: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    spoken: asyncio.Event = field(default_factory=asyncio.Event)
    spoken_at: float = 0.0

    @classmethod
    async def join(cls, url: str, token: str) -> Caller:
        room = rtc.Room()
        caller = cls(room, rtc.AudioSource(RATE, 1))

        @room.on("track_subscribed")
        def _on_track(track: rtc.Track, *_: Any) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                caller._spawn(caller._listen(track))

        @room.on("local_track_subscribed")
        def _on_mic_subscribed(_track: rtc.Track) -> None:
            caller.mic_subscribed.set()

        def check(p: rtc.Participant) -> None:
            if p.attributes.get(ATTRIBUTE_AGENT_STATE) == "listening":
                caller.agent_listening.set()

        room.on("participant_attributes_changed", lambda _changed, p: check(p))
        room.on("participant_connected", check)
        await room.connect(url, token)
        for p in room.remote_participants.values():
            check(p)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", caller.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, opts)
        return caller

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _listen(self, track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.float64)
            now, rms = time.monotonic(), float(np.sqrt(np.mean(pcm**2)))
            self.heard.append((now, rms))
            if now > self.listen_after and rms > LOUD:
                self.heard_agent.set()

    def open_microphone(self) -> None:
        """Feed the microphone in real time, 20 ms a frame: queued speech, else silence."""
        async def feed() -> None:
            start = time.monotonic()
            for n in itertools.count():
                chunk, self.queued = self.queued[:FRAME], self.queued[FRAME:]
                if len(chunk) and not len(self.queued):
                    self.spoken_at = start + (n + 1) * 0.02
                    self.spoken.set()
                chunk = np.pad(chunk, (0, FRAME - len(chunk)))
                await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, FRAME))
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
        self._spawn(feed())

    async def say(self, pcm48k: np.ndarray) -> float:
        """Speak; returns the monotonic time at which the speech ended."""
        self.spoken.clear()
        self.listen_after = time.monotonic() + len(pcm48k) / RATE
        self.queued = pcm48k
        await self.spoken.wait()
        return self.spoken_at

    def first_loud_after(self, t: float) -> float:
        return next(at for at, rms in self.heard if at > t and rms > LOUD)

    async def leave(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.room.disconnect()


async def speech_48k(text: str) -> np.ndarray:
    pcm = np.frombuffer(await espeak_pcm(text), dtype=np.int16)
    frame = rtc.AudioFrame(pcm.tobytes(), ESPEAK_RATE, 1, len(pcm))
    rs = rtc.AudioResampler(ESPEAK_RATE, RATE, num_channels=1)
    out = b"".join(bytes(f.data) for f in [*rs.push(frame), *rs.flush()])
    pcm = np.frombuffer(out, dtype=np.int16)
    voiced = np.flatnonzero(np.abs(pcm) > 100)  # espeak pads with silence: "end" = last sound
    return pcm[voiced[0]:voiced[-1] + 1]


async def test_caller_talks_to_the_sessions_agent_with_the_chat_client(
        cluster: Cluster, bus: Bus, livekit: LiveKitServer) -> None:
    edge = cluster.edge()
    cluster.worker()
    env = voice_env(cluster, livekit)
    worker = VoiceWorker(env)
    sid = f"call-{uuid.uuid4().hex[:8]}"
    chat = await Client.open(edge.port, user="alice", session=sid)
    caller: Caller | None = None
    try:
        await chat.until("welcome")
        call = await start_call(voice_settings(env), sid, "alice")
        caller = await Caller.join(call.url, call.token)
        caller.open_microphone()
        await asyncio.wait_for(caller.mic_subscribed.wait(), 20)  # the agent hears us
        await asyncio.wait_for(caller.agent_listening.wait(), 20)
        await asyncio.sleep(0.5)  # half a second of silence first, as a caller would
        spoken = await caller.say(await speech_48k("what time is it"))

        user = await chat.until("user", timeout=20)
        assert (user["text"], user["source"], user["user"]) == ("what time is it", "voice",
                                                                "alice")
        reply = await chat.until("reply", timeout=20, turn=user["offset"])
        assert "The tool says:" in reply["text"]
        assert any(f["type"] == "tool" and f["turn"] == user["offset"] for f in chat.frames)

        await asyncio.wait_for(caller.heard_agent.wait(), 20)
        latency = caller.first_loud_after(spoken) - spoken
        print(f"\nVOICE LATENCY end of speech -> first agent audio: {latency * 1000:.0f} ms")
        await asyncio.sleep(1.0)
        loud = [rms for at, rms in caller.heard if at > spoken and rms > LOUD]
        assert len(loud) >= 25, "the agent's answer was not audible (under 0.5 s of sound)"

        log = await bus.replay(sid, 0, None)
        events = [{"offset": o, **orjson.loads(e)} for o, e in log.events]
        voice_turns = [e for e in events if e["type"] == "user" and e["source"] == "voice"]
        assert [e["text"] for e in voice_turns] == ["what time is it"]
        assert any(e["type"] == "reply" and e["turn"] == user["offset"] for e in events)
    finally:
        if caller is not None:
            await caller.leave()
        await chat.close()
        worker.stop()
    assert "Traceback" not in worker.text(), worker.log_path
