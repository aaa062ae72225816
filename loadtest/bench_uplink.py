"""Where the uplink's time goes: the caller's end of speech -> the VAD's end, measured apart.

    .venv/bin/python -m loadtest.bench_uplink [--phrases 8] [--record]

``bench_voice``'s first stage (``caller_end->speech_end``, ~150-180 ms p50) is the room
(the caller's microphone queue and 20 ms Opus frames, LiveKit's SFU, the receiver's jitter
buffer) plus the agent's framing and Silero's lag. This bench runs it without the agent: its
own LiveKit server, the bench's caller (:class:`voice.caller.Caller`, espeak-ng sentences in
real time) and an *ear*, a second participant that receives the caller's audio the way a call
does (``rtc.AudioStream`` at 16 kHz in ``AGENTIA_VOICE_INPUT_FRAME_MS`` frames) and runs
Silero on it as the turn VAD does (same options: ``AGENTIA_VOICE_FINISHED_SILENCE_S`` of
silence, the worker's default). Per sentence, from the caller's end of speech (the end of its
last queued 20 ms frame, as ``bench_voice`` took it until session 17):

* ``mic_queue``: audio still in the caller's ``rtc.AudioSource`` queue at that moment;
* ``sound_end``: the last speech sample leaves that source (``Caller.sound_ended_at``, the
  end of speech ``bench_voice`` takes since session 17);
* ``last_loud_frame`` / ``last_sound_frame``: the ear's last frame with speech (RMS > 300,
  the callers' rule) / with any sound (RMS > 10: the tail of the last word) arrives
  (microphone queue, Opus, SFU, jitter buffer, the frame filling up);
* ``raw_silent``: the first window whose own Silero probability is silence is processed;
* ``smoothed_silent``: the first window silent by Silero's smoothed probability;
* ``speech_end``: the VAD's end of speech as livekit-agents stamps it at END_OF_SPEECH (the
  event's time less the silence it counted and its inference time), what ``bench_voice``'s
  ``speech_end`` is.

Plus the ear's jitter buffer (WebRTC inbound-rtp: mean delay, target, minimum). Everything on
loopback, one process for both participants (the box is shared: say so with the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from livekit import api, rtc
from livekit.agents import vad as agents_vad
from livekit.plugins import silero

from agentia.settings import from_env
from loadtest.voice_calls import jitter_buffer
from voice.caller import Caller, speech_48k
from voice.edge_stt import SILERO_DEACTIVATION, raw_probability
from voice.livekit_server import LiveKitServer, find_binary
from voice.settings import VoiceSettings

SENTENCES = ("tell me about the weather in paris tomorrow", "what time is it",
             "how are you today", "thank you very much", "where is the nearest train station",
             "i would like to change my password", "good morning", "tell me a story")
LOUD = 300.0
"""RMS (int16) above which a received frame holds speech (voice/caller.py's rule)."""
SOUND = 10.0
"""RMS above which a received frame holds any sound: the caller's audio trims at sample
amplitude 100 and sends digital zeros after it (Opus decodes them to ~0)."""
RATE = 16_000
PAUSE_S = 1.5
"""Silence between sentences: every end of speech is over before the next one starts."""


def token(lk: LiveKitServer, room: str, who: str) -> str:
    return (api.AccessToken(lk.key, lk.secret).with_identity(who)
            .with_grants(api.VideoGrants(room_join=True, room=room)).to_jwt())


class Ear:
    """The receiving side: frames as a call gets them, Silero as the turn VAD runs it."""

    def __init__(self, s: VoiceSettings) -> None:
        self.frames: list[tuple[float, float]] = []  # (arrival, RMS)
        self.windows: list[tuple[float, float, float]] = []  # (processed, smoothed p, raw p)
        self.ends: list[float] = []  # speech_end as livekit-agents stamps it
        self.vad = silero.VAD.load(min_silence_duration=s.voice_finished_silence_s)
        self.frame_ms = s.voice_input_frame_ms
        self.track: rtc.RemoteAudioTrack | None = None
        self.got_track = asyncio.Event()

    async def run(self, track: rtc.Track) -> None:
        stream = self.vad.stream()
        feed = asyncio.create_task(self._frames(track, stream))
        prev = 0.0
        try:
            async for ev in stream:
                now = time.monotonic()
                if ev.type == agents_vad.VADEventType.INFERENCE_DONE:
                    self.windows.append((now, ev.probability, raw_probability(ev.probability,
                                                                              prev)))
                    prev = ev.probability
                elif ev.type == agents_vad.VADEventType.END_OF_SPEECH:
                    self.ends.append(now - ev.silence_duration - ev.inference_duration)
        finally:
            feed.cancel()

    async def _frames(self, track: rtc.Track, stream: Any) -> None:
        async for ev in rtc.AudioStream(track, sample_rate=RATE, num_channels=1,
                                        frame_size_ms=self.frame_ms):
            pcm = np.frombuffer(ev.frame.data, dtype=np.int16).astype(np.int64)
            self.frames.append((time.monotonic(),
                                float(np.sqrt(pcm.dot(pcm) / max(1, len(pcm))))))
            stream.push_frame(ev.frame)


def after(end: float, ear: Ear) -> dict[str, float]:
    """One sentence's moments after the caller's end of speech ``end`` (ms)."""
    nxt = end + PAUSE_S
    loud = [at for at, rms in ear.frames if end - 1.0 < at < nxt and rms > LOUD]
    sound = [at for at, rms in ear.frames if end - 1.0 < at < nxt and rms > SOUND]
    out: dict[str, float] = {}
    if sound:
        out["last_sound_frame"] = sound[-1]
    if loud:
        out["last_loud_frame"] = loud[-1]
        late = [w for w in ear.windows if loud[-1] <= w[0] < nxt]
        for name, k in (("smoothed_silent", 1), ("raw_silent", 2)):
            at = next((w[0] for w in late if w[k] <= SILERO_DEACTIVATION), None)
            if at is not None:
                out[name] = at
    speech_end = next((t for t in ear.ends if end - 1.0 < t < nxt), None)
    if speech_end is not None:
        out["speech_end"] = speech_end
    return {k: round(1000 * (v - end), 1) for k, v in out.items()}


async def measure(lk: LiveKitServer, phrases: int, s: VoiceSettings) -> dict[str, Any]:
    ear, room = Ear(s), rtc.Room()
    tasks: list[asyncio.Task[None]] = []

    @room.on("track_subscribed")
    def _on_track(track: rtc.Track, *_: Any) -> None:
        if track.kind == rtc.TrackKind.KIND_AUDIO:
            tasks.append(asyncio.create_task(ear.run(track)))
            ear.track = track  # type: ignore[assignment]
            ear.got_track.set()

    await room.connect(lk.url, token(lk, "uplink", "ear"))
    caller = await Caller.join(lk.url, token(lk, "uplink", "caller"))
    caller.open_microphone()
    rows: list[dict[str, float]] = []
    try:
        await asyncio.wait_for(ear.got_track.wait(), 20)
        await asyncio.sleep(1.0)
        for i in range(phrases):
            pcm = await speech_48k(SENTENCES[i % len(SENTENCES)])
            caller.start_saying(pcm)
            await caller.spoken.wait()
            end, queued = caller.spoken_at, caller.source.queued_duration
            await asyncio.sleep(PAUSE_S)
            rows.append({"mic_queue": round(1000 * queued, 1),
                         "sound_end": round(1000 * (caller.sound_ended_at - end), 1),
                         **after(end, ear)})
            print(rows[-1], flush=True)
        buffer = await jitter_buffer(ear.track)
    finally:
        await caller.leave()
        await room.disconnect()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    keys = ("mic_queue", "sound_end", "last_loud_frame", "last_sound_frame", "raw_silent",
            "smoothed_silent", "speech_end")
    return {"phrases": len(rows), "ear_jitter_buffer": buffer,
            "input_frame_ms": s.voice_input_frame_ms,
            "vad_min_silence_s": s.voice_finished_silence_s,
            "after_caller_end_ms": {k: _p50(rows, k) for k in keys}, "rows": rows,
            "load_avg": os.getloadavg()[0]}


def _p50(rows: list[dict[str, float]], key: str) -> dict[str, float]:
    vals = [r[key] for r in rows if key in r]
    return {"n": len(vals), "p50": round(statistics.median(vals), 1) if vals else 0.0,
            "max": max(vals) if vals else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--phrases", type=int, default=8)
    ap.add_argument("--record", action="store_true", help="write results/voice-uplink.json")
    ap.add_argument("--record-as", default="voice-uplink", metavar="NAME",
                    help="--record writes loadtest/results/NAME.json instead")
    args = ap.parse_args()
    binary = find_binary()
    if binary is None:
        raise SystemExit("no LiveKit server binary")
    s = from_env(VoiceSettings)
    with tempfile.TemporaryDirectory() as work:
        lk = LiveKitServer(binary, Path(work)).start()
        try:
            figures = asyncio.run(asyncio.wait_for(
                measure(lk, max(1, min(args.phrases, 50)), s), 60 + 5 * args.phrases))
        finally:
            lk.stop()
    print({k: v for k, v in figures.items() if k != "rows"})
    if args.record:
        from loadtest.record import record

        print("recorded", record(args.record_as, figures, notes=(
            "one process: the bench's caller and an ear receiving its audio as a call does, "
            "Silero on it as the turn VAD; ms after the caller's end of speech (the end of "
            "the slot its last speech frame was queued in; sound_end: when that frame's last "
            "sample leaves the caller's source)")))


if __name__ == "__main__":
    main()
