"""Each room audio frame reaches its own stream only (voice/ffi_routing.py), through a real
LiveKit server: two callers speak, one listener holds a stream on each of their tracks, each
stream on its own event loop (as the thread executor runs calls). Every frame event a
stream's subscription receives is its own, and every frame it yields was routed."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
from livekit import api, rtc

from tests.voice.livekit_server import LiveKitServer
from voice import ffi_routing
from voice.caller import Caller

FRAMES = 25
"""Frames each listening stream reads (20 ms each at the default frame length: 0.5 s)."""


def token(lk: LiveKitServer, room: str, who: str) -> str:
    grants = api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
    return (api.AccessToken(lk.key, lk.secret).with_identity(who).with_grants(grants)
            .to_jwt())


class Ear:
    """One stream on ``track`` read on a loop of its own (a thread), counting what its
    subscription was handed."""

    def __init__(self, track: rtc.RemoteAudioTrack) -> None:
        self.track = track
        self.own = self.foreign = self.frames = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=lambda: asyncio.run(self._read()))
        self.thread.start()

    async def _read(self) -> None:
        try:
            stream = rtc.AudioStream(self.track, sample_rate=16_000, num_channels=1)
            handle, queue = stream._ffi_handle.handle, stream._ffi_queue
            put = queue.put_nowait

            def counted(ev: Any) -> None:
                if ev.audio_stream_event.stream_handle == handle:
                    self.own += 1
                else:
                    self.foreign += 1
                put(ev)
            queue.put_nowait = counted
            async for ev in stream:
                self.frames += ev.frame.samples_per_channel > 0
                if self.frames >= FRAMES:
                    break
            await stream.aclose()
        except BaseException as exc:  # reported by the test's thread
            self.error = exc


async def test_each_stream_gets_its_own_frames_only(livekit: LiveKitServer) -> None:
    assert ffi_routing.install()
    room = "routing-" + np.random.default_rng().bytes(4).hex()
    callers = [await Caller.join(livekit.url, token(livekit, room, f"caller-{n}"))
               for n in range(2)]
    tracks: list[rtc.RemoteAudioTrack] = []
    both = asyncio.Event()
    listener = rtc.Room()

    @listener.on("track_subscribed")
    def _on_track(track: rtc.Track, *_: Any) -> None:
        if isinstance(track, rtc.RemoteAudioTrack):
            tracks.append(track)
            if len(tracks) == 2:
                both.set()
    try:
        for c in callers:
            c.open_microphone()
        await listener.connect(livekit.url, token(livekit, room, "listener"))
        await asyncio.wait_for(both.wait(), 20)
        before = ffi_routing.routed()
        ears = [Ear(t) for t in tracks]
        await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(e.thread.join)
                                                for e in ears)), 30)
    finally:
        await listener.disconnect()
        for c in callers:
            await c.leave()
    for ear in ears:
        assert ear.error is None, ear.error
        assert ear.frames == FRAMES
        assert ear.foreign == 0, f"{ear.foreign} frames of the other stream were delivered"
        assert ear.own >= FRAMES
    # every frame event of the two streams was routed (the callers' ears' too)
    assert ffi_routing.routed() - before >= 2 * FRAMES
