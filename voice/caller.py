"""A scripted caller: a ``livekit`` room participant that speaks espeak-ng audio and listens.

The voice tests and ``loadtest/bench_voice.py`` call the agent with it. It feeds its microphone
in real time (20 ms frames: queued speech, else silence), records the loudness of every frame
of the agent's audio it receives, follows the agent's state and call (``agentia.call``)
attributes, and notes when the agent leaves the room.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from livekit import rtc
from livekit.agents.types import ATTRIBUTE_AGENT_STATE

from voice import ffi_routing
from voice.call import CALL_ATTRIBUTE
from voice.speech import ESPEAK_RATE, espeak_pcm

RATE = 48_000
FRAME = RATE // 50  # 20 ms
MIC_QUEUE_MS = 50
"""The microphone's send queue (``rtc.AudioSource``, 1,000 ms by default). The feed keeps real
time, so whatever it ever fell behind (an event loop busy on a loaded machine) and caught up
stayed queued for the rest of the call: 82 ms at the end of a sentence in a test here, audio a
real microphone would have sent at once, counted as the agent's latency. A short queue makes a
late capture wait instead (the feed then sleeps less)."""
LOUD = 300.0
"""RMS of int16 samples above which a received frame counts as the agent's speech."""
HEARD_FRAMES = 60_000
"""Frames of the agent's audio a caller remembers (10 ms each: its last 10 minutes)."""


async def speech_48k(text: str, wpm: int = 170) -> np.ndarray:
    """espeak-ng saying ``text`` at a room's rate, trimmed to its first and last sound."""
    pcm = np.frombuffer(await espeak_pcm(text, wpm=wpm), dtype=np.int16)
    frame = rtc.AudioFrame(pcm.tobytes(), ESPEAK_RATE, 1, len(pcm))
    rs = rtc.AudioResampler(ESPEAK_RATE, RATE, num_channels=1,
                            quality=rtc.AudioResamplerQuality.HIGH)
    out = b"".join(bytes(f.data) for f in [*rs.push(frame), *rs.flush()])
    pcm = np.frombuffer(out, dtype=np.int16)
    voiced = np.flatnonzero(np.abs(pcm) > 100)
    return pcm[voiced[0]:voiced[-1] + 1]


def played_out_at(source: rtc.AudioSource, samples: int) -> float:
    """When ``samples`` captured into ``source`` now will have left it (monotonic): after the
    audio queued ahead of them (LiveKit's own account, ``queued_duration``: captured audio less
    the real time since, 0 once drained) has been played out, plus their own duration. Call it
    just before the capture: ``capture_frame`` updates that account before its first await."""
    return time.monotonic() + source.queued_duration + samples / source.sample_rate


@dataclass
class Caller:
    """A room participant with a microphone it feeds in real time and ears on the agent."""

    room: rtc.Room
    source: rtc.AudioSource
    heard: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=HEARD_FRAMES))
    """(monotonic time, RMS) of each frame of the agent's audio (the last ``HEARD_FRAMES``)."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    state: str = ""
    """The agent's state attribute (initializing, listening, thinking, speaking)."""
    states: list[tuple[float, str]] = field(default_factory=list)
    messages: list[dict[str, Any]] = field(default_factory=list)
    """Every value of the agent's ``agentia.call`` attribute (state, code, message)."""
    agent_listening: asyncio.Event = field(default_factory=asyncio.Event)
    mic_subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    """The agent subscribed to our microphone."""
    agent_left: asyncio.Event = field(default_factory=asyncio.Event)
    left_at: float = 0.0
    heard_agent: asyncio.Event = field(default_factory=asyncio.Event)
    listen_after: float = float("inf")
    """heard_agent is set by the first loud frame after this (monotonic) time."""
    queued: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    spoken: asyncio.Event = field(default_factory=asyncio.Event)
    spoken_at: float = 0.0
    """When the last frame with speech was *queued* (the end of its real-time slot): what
    ``say`` returns, the bench's end of speech until session 17 (``p50_from_queued``)."""
    sound_ended_at: float = 0.0
    """When the last speech sample *leaves* the microphone's source (:func:`played_out_at`):
    the moment a person's speech ends, the bench's end of speech since session 17."""

    @classmethod
    async def join(cls, url: str, token: str) -> Caller:
        ffi_routing.install()  # each caller's ears get their own frames only
        room = rtc.Room()
        caller = cls(room, rtc.AudioSource(RATE, 1, queue_size_ms=MIC_QUEUE_MS))

        @room.on("track_subscribed")
        def _on_track(track: rtc.Track, *_: Any) -> None:
            if track.kind == rtc.TrackKind.KIND_AUDIO:
                caller._spawn(caller._listen(track))

        @room.on("local_track_subscribed")
        def _on_mic_subscribed(_track: rtc.Track) -> None:
            caller.mic_subscribed.set()

        @room.on("participant_disconnected")
        def _on_left(p: rtc.RemoteParticipant) -> None:
            if p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
                caller.left_at = time.monotonic()
                caller.agent_left.set()

        room.on("participant_attributes_changed", lambda _changed, p: caller._check(p))
        room.on("participant_connected", caller._check)
        await room.connect(url, token)
        for p in room.remote_participants.values():
            caller._check(p)
        track = rtc.LocalAudioTrack.create_audio_track("microphone", caller.source)
        opts = rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        await room.local_participant.publish_track(track, opts)
        return caller

    def _check(self, p: rtc.Participant) -> None:
        st = p.attributes.get(ATTRIBUTE_AGENT_STATE)
        if st and st != self.state:
            self.state = st
            self.states.append((time.monotonic(), st))
        if st == "listening":
            self.agent_listening.set()
        raw = p.attributes.get(CALL_ATTRIBUTE)
        msg = orjson.loads(raw) if raw else None
        if msg and (not self.messages or self.messages[-1] != msg):
            self.messages.append(msg)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _listen(self, track: rtc.Track) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1):
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.int64)
            now, rms = time.monotonic(), float(np.sqrt(pcm.dot(pcm) / max(1, len(pcm))))
            self.heard.append((now, rms))
            if now > self.listen_after and rms > LOUD:
                self.heard_agent.set()

    def open_microphone(self) -> None:
        """Feed the microphone in real time, 20 ms a frame: queued speech, else silence."""
        async def feed() -> None:
            start = time.monotonic()
            for n in itertools.count():
                chunk, self.queued = self.queued[:FRAME], self.queued[FRAME:]
                if len(chunk) and not len(self.queued):  # the speech's last frame
                    self.spoken_at = start + (n + 1) * 0.02
                    self.sound_ended_at = played_out_at(self.source, len(chunk))
                    self.spoken.set()
                chunk = np.pad(chunk, (0, FRAME - len(chunk)))
                await self.source.capture_frame(rtc.AudioFrame(chunk.tobytes(), RATE, 1, FRAME))
                await asyncio.sleep(max(0.0, start + (n + 1) * 0.02 - time.monotonic()))
        self._spawn(feed())

    async def ready(self, within: float) -> None:
        """Until the agent hears our microphone and says it is listening."""
        await asyncio.wait_for(self.mic_subscribed.wait(), within)
        await asyncio.wait_for(self.agent_listening.wait(), within)

    async def wait_listening(self, within: float, quiet_s: float = 0.3) -> None:
        """Until the agent is listening and nothing loud came for ``quiet_s``."""
        async def until() -> None:
            while True:
                if self.state == "listening" and time.monotonic() - self.last_loud() > quiet_s:
                    return
                await asyncio.sleep(0.05)
        await asyncio.wait_for(until(), within)

    async def wait_answered(self, after: float, within: float, quiet_s: float = 1.0) -> None:
        """Until the agent spoke after ``after``, went back to listening, and its audio has been
        quiet for ``quiet_s`` (state attributes can arrive late under load: the audio decides
        too, or the next phrase would talk over the previous answer)."""
        async def until() -> None:
            while True:
                spoke = next((at for at, st in self.states if at > after and st == "speaking"),
                             None)
                back = spoke is not None and any(at > spoke and st == "listening"
                                                 for at, st in self.states)
                if (back and self.state == "listening"
                        and time.monotonic() - self.last_loud() > quiet_s):
                    return
                await asyncio.sleep(0.05)
        await asyncio.wait_for(until(), within)

    def expect_audio_after(self, t: float) -> None:
        """Make ``heard_agent`` wait for the first loud frame after ``t`` (monotonic)."""
        self.heard_agent.clear()
        self.listen_after = t

    def start_saying(self, pcm48k: np.ndarray) -> None:
        """Queue speech without waiting for it to be spoken."""
        self.spoken.clear()
        self.expect_audio_after(time.monotonic() + len(pcm48k) / RATE)
        self.queued = pcm48k

    async def say(self, pcm48k: np.ndarray) -> float:
        """Speak; returns the monotonic time at which the speech ended."""
        self.start_saying(pcm48k)
        await self.spoken.wait()
        return self.spoken_at

    def first_loud_after(self, t: float) -> float:
        return next(at for at, rms in self.heard if at > t and rms > LOUD)

    def last_loud(self, before: float = float("inf")) -> float:
        return next((at for at, rms in reversed(self.heard) if at < before and rms > LOUD), 0.0)

    def loud_between(self, t0: float, t1: float) -> int:
        """Loud frames (20 ms each) of the agent's audio in [t0, t1)."""
        return sum(1 for at, rms in self.heard if t0 <= at < t1 and rms > LOUD)

    async def leave(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.room.disconnect()
