"""The VAD work of a call, room-free: two Silero streams (before) against one and a follower.

    .venv/bin/python -m loadtest.bench_vad [--calls 4] [--seconds 20] [--rounds 3] [--rate 24000]
        [--after-rate 16000]

Each call's audio (espeak-ng sentences between 0.6 s pauses of quiet noise, ``--seconds``
long, in 20 ms frames at ``--rate``: the room input's rate) is pushed, as fast as the streams
take it, to the VADs a call runs, for ``--calls`` calls at once on one event loop:

* ``two streams`` (before, :func:`voice.engines.vad_like`): the turn's Silero stream
  (0.35 s silence) and the recogniser's own (0.2 s);
* ``one stream`` (:mod:`voice.shared_vad`): the turn's stream, the recogniser's decisions on
  its inferences (its audio at ``--after-rate`` if given: the room input at 16 kHz, Silero's
  own rate, needs no resampler).

Reported per mode: the process CPU (onnxruntime's threads included) per second of audio per
call, and the utterances each recogniser VAD cut (they must agree). The modes alternate within
each round, the order reversed every other round. The machine is shared: compare the modes of
one run. ``--record`` writes ``loadtest/results/voice-vad.json`` (``--record-as`` another).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any, cast

import numpy as np
from livekit import rtc
from livekit.agents import vad
from livekit.plugins import silero

from loadtest.record import record
from voice.engines import vad_like
from voice.shared_vad import FollowerVAD, Tap, TurnVAD
from voice.speech import espeak_pcm

SENTENCES = ("what time is it", "tell me about the weather in paris tomorrow",
             "send a message to john saying i am running late", "thank you very much")


async def call_audio(rate: int, seconds: float) -> list[rtc.AudioFrame]:
    """Sentences between pauses of quiet noise, ``seconds`` long, in 20 ms frames."""
    rng = np.random.default_rng(1)
    parts: list[np.ndarray] = []
    n = 0
    while n < seconds * rate:
        for text in SENTENCES:
            pcm = np.frombuffer(await espeak_pcm(text), dtype=np.int16)
            frame = rtc.AudioFrame(pcm.tobytes(), 22_050, 1, len(pcm))
            rs = rtc.AudioResampler(22_050, rate, num_channels=1)
            out = b"".join(bytes(f.data) for f in [*rs.push(frame), *rs.flush()])
            pause = rng.integers(-20, 20, size=int(0.6 * rate), dtype=np.int16)
            parts += [np.frombuffer(out, dtype=np.int16), pause]
            n += len(out) // 2 + len(pause)
    audio = np.concatenate(parts)[:int(seconds * rate)]
    step = rate // 50
    return [rtc.AudioFrame(audio[i:i + step].tobytes(), rate, 1, step)
            for i in range(0, len(audio) - step + 1, step)]


async def _cuts(stream: vad.VADStream) -> int:
    n = 0
    async for ev in stream:
        n += ev.type == vad.VADEventType.END_OF_SPEECH
    return n


def _streams(shared: silero.VAD, mode: str) -> tuple[vad.VADStream, vad.VADStream]:
    """(the turn's stream, the recogniser's) of one call."""
    if mode == "two streams":
        return vad_like(shared).stream(), vad_like(shared, min_silence_duration=0.2).stream()
    tap = Tap()
    return (TurnVAD(shared, tap).stream(),
            FollowerVAD(tap, shared, min_silence_duration=0.2).stream())


async def one_run(shared: silero.VAD, mode: str, calls: int,
                  audio: list[rtc.AudioFrame]) -> tuple[float, list[int]]:
    """(process CPU seconds, utterances each call's recogniser VAD cut)."""
    pairs = [_streams(shared, mode) for _ in range(calls)]
    turns = [asyncio.create_task(_cuts(t)) for t, _ in pairs]
    recs = [asyncio.create_task(_cuts(r)) for _, r in pairs]
    cpu = time.process_time()
    for frame in audio:
        for t, r in pairs:
            t.push_frame(frame)
            r.push_frame(frame)
        await asyncio.sleep(0)
    for t, _ in pairs:
        t.end_input()
    await asyncio.gather(*turns)  # every window published before the followers end
    for _, r in pairs:
        r.end_input()
    cut = await asyncio.gather(*recs)
    used = time.process_time() - cpu
    for t, r in pairs:
        await t.aclose()
        await r.aclose()
    return used, list(cut)


async def bench(a: argparse.Namespace) -> dict[str, Any]:
    shared = cast(silero.VAD, silero.VAD.load(min_silence_duration=0.35))
    audio = {"two streams": await call_audio(a.rate, a.seconds),
             "one stream": await call_audio(a.after_rate or a.rate, a.seconds)}
    modes = ["two streams", "one stream"]
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    cuts: dict[str, list[list[int]]] = {m: [] for m in modes}
    for r in range(a.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            used, cut = await one_run(shared, mode, a.calls, audio[mode])
            cpu[mode].append(used / (a.seconds * a.calls))
            cuts[mode].append(cut)
            print(f"round {r + 1} {mode}: {used:.2f} CPU-s, cuts {cut}", flush=True)
    return {m: {"cpu_s_per_audio_s_per_call": [round(x, 4) for x in cpu[m]],
                "median": round(statistics.median(cpu[m]), 4),
                "recogniser_cuts_per_call": cuts[m][0]} for m in modes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--rate", type=int, default=24_000, help="the room input's sample rate")
    p.add_argument("--after-rate", type=int, default=0,
                   help="the one-stream mode's input rate (0: --rate)")
    p.add_argument("--record", action="store_true")
    p.add_argument("--record-as", default="voice-vad")
    a = p.parse_args()
    figures = asyncio.run(bench(a))
    before, after = figures["two streams"]["median"], figures["one stream"]["median"]
    figures["saved_pct"] = round(100 * (1 - after / before), 1)
    print(figures)
    if a.record:
        print("recorded:", record(a.record_as, figures, notes=(
            "process CPU per second of audio per call (cores a call's VADs take in real "
            "time), the modes alternating; room-free, one event loop")))


if __name__ == "__main__":
    main()
