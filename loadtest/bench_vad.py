"""The VAD work of a call, room-free: its Silero stream(s) as a call of each tree runs them.

    .venv/bin/python -m loadtest.bench_vad [--calls 4] [--seconds 10] [--rounds 3]
        [--modes before,after] [--burst]

Each call's audio (espeak-ng sentences between 0.6 s pauses of quiet noise, ``--seconds``
long, in frames as the call's room input makes them) is pushed to the VADs a call runs, for
``--calls`` calls at once on one event loop, in real time (each frame when its audio would
have arrived: the streams wake per frame, as in a call) or, with ``--burst``, as fast as they
take it. Modes:

* ``two streams`` (session 10): the turn's Silero stream (0.35 s silence) and the
  recogniser's own (0.2 s, :func:`voice.engines.vad_like`), 20 ms frames at 24 kHz;
* ``before`` (session 11's end): one stream and a follower (:mod:`voice.shared_vad`), 20 ms
  frames at 16 kHz, each window's inference through the loop's executor;
* ``after``: the same in 32 ms frames (one Silero window each), the inference inline.

Reported per mode: the process CPU (onnxruntime's threads included) per second of audio per
call, and the utterances each recogniser VAD cut (they must agree). The modes alternate within
each round, the order reversed every other round. The machine is shared: compare the modes of
one run. ``--record`` writes ``loadtest/results/voice-vad.json`` (``--record-as`` another).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Mode:
    streams: str
    """``two``: a Silero stream each for the turn and the recogniser; ``one``: a stream and a
    follower."""
    rate: int
    frame_ms: int
    inline: bool


MODES = {"two streams": Mode("two", 24_000, 20, False),
         "before": Mode("one", 16_000, 20, False),
         "after": Mode("one", 16_000, 32, True)}


async def call_audio(rate: int, seconds: float, frame_ms: int) -> list[rtc.AudioFrame]:
    """Sentences between pauses of quiet noise, ``seconds`` long, in ``frame_ms`` frames."""
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
    step = rate * frame_ms // 1000
    return [rtc.AudioFrame(audio[i:i + step].tobytes(), rate, 1, step)
            for i in range(0, len(audio) - step + 1, step)]


async def _cuts(stream: vad.VADStream) -> int:
    n = 0
    async for ev in stream:
        n += ev.type == vad.VADEventType.END_OF_SPEECH
    return n


def _streams(shared: silero.VAD, mode: Mode) -> tuple[vad.VADStream, vad.VADStream]:
    """(the turn's stream, the recogniser's) of one call."""
    if mode.streams == "two":
        return vad_like(shared).stream(), vad_like(shared, min_silence_duration=0.2).stream()
    tap = Tap()
    return (TurnVAD(shared, tap, inline=mode.inline).stream(),
            FollowerVAD(tap, shared, min_silence_duration=0.2).stream())


async def one_run(shared: silero.VAD, mode: Mode, calls: int, audio: list[rtc.AudioFrame],
                  realtime: bool) -> tuple[float, list[int]]:
    """(process CPU seconds, utterances each call's recogniser VAD cut)."""
    pairs = [_streams(shared, mode) for _ in range(calls)]
    turns = [asyncio.create_task(_cuts(t)) for t, _ in pairs]
    recs = [asyncio.create_task(_cuts(r)) for _, r in pairs]
    cpu, start = time.process_time(), time.monotonic()
    for n, frame in enumerate(audio):
        for t, r in pairs:
            t.push_frame(frame)
            r.push_frame(frame)
        wait = start + (n + 1) * mode.frame_ms / 1000 - time.monotonic() if realtime else 0
        await asyncio.sleep(max(0.0, wait))
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
    modes = [m.strip() for m in a.modes.split(",")]
    audio = {m: await call_audio(MODES[m].rate, a.seconds, MODES[m].frame_ms) for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}
    cuts: dict[str, list[list[int]]] = {m: [] for m in modes}
    for r in range(a.rounds):
        for mode in modes if r % 2 == 0 else modes[::-1]:
            used, cut = await one_run(shared, MODES[mode], a.calls, audio[mode], not a.burst)
            cpu[mode].append(used / (a.seconds * a.calls))
            cuts[mode].append(cut)
            print(f"round {r + 1} {mode}: {used:.2f} CPU-s, cuts {cut}", flush=True)
    return {m: {**dataclasses.asdict(MODES[m]),
                "cpu_s_per_audio_s_per_call": [round(x, 4) for x in cpu[m]],
                "median": round(statistics.median(cpu[m]), 4),
                "recogniser_cuts_per_call": cuts[m][0]} for m in modes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--modes", default="before,after",
                   help=f"comma separated, the first the reference: {', '.join(MODES)}")
    p.add_argument("--burst", action="store_true",
                   help="push the frames as fast as the streams take them, not in real time")
    p.add_argument("--record", action="store_true")
    p.add_argument("--record-as", default="voice-vad")
    a = p.parse_args()
    if any(m.strip() not in MODES for m in a.modes.split(",")):
        p.error(f"--modes: of {', '.join(MODES)}")
    figures = asyncio.run(bench(a))
    first, *rest = [m.strip() for m in a.modes.split(",")]
    for m in rest:
        figures[m]["saved_pct"] = round(
            100 * (1 - figures[m]["median"] / figures[first]["median"]), 1)
    print(figures)
    if a.record:
        print("recorded:", record(a.record_as, figures, notes=(
            "process CPU per second of audio per call (cores a call's VADs take), the modes "
            f"alternating; room-free, one event loop, {'burst' if a.burst else 'real time'}; "
            f"reference: {first}")))


if __name__ == "__main__":
    main()
