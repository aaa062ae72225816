"""CPU cost of the caller's interim transcripts (voice/interim.py) per utterance and per call.

    .venv/bin/python -m loadtest.bench_interim [--model base] [--every 1.0] [--rounds 3]

espeak-ng speaks :data:`SENTENCES` (2-6 s each); for each, the Whisper engine the voice worker
loads (``voice.worker.whisper`` on default ``VoiceSettings``, ``--model`` to compare) transcribes
what an :class:`voice.interim.Schedule` asks for while the sentence is "spoken" (the utterance
so far every ``--every`` s of speech, its last ``WINDOW_S``), then the whole utterance as the
final. CPU is this process's (all threads: CTranslate2's too), steadier than wall time on a
shared machine. Prints CPU-s per interim, interims per utterance, CPU of the interims of one
utterance next to its final's, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable

import numpy as np

from voice.interim import WINDOW_S
from voice.settings import VoiceSettings
from voice.speech import STT_RATE, espeak_pcm, to_mono16k

SENTENCES = (
    "what time is it",
    "tell me about the weather in paris tomorrow",
    "please tell me about the weather in paris and in london for the whole of next week",
    "can you book a table for two people at seven tonight near the station",
    "send a message to john saying that i am running about ten minutes late today",
)


async def speech16k(text: str) -> bytes:
    from livekit import rtc
    pcm = await espeak_pcm(text, wpm=170)
    return to_mono16k([rtc.AudioFrame(pcm, 22_050, 1, len(pcm) // 2)])


def cpu(fn: Callable[[bytes], str], pcm: bytes) -> tuple[float, str]:
    start = time.process_time()
    out = fn(pcm)
    return time.process_time() - start, out


def run(model: str, every_s: float, rounds: int) -> None:
    from voice.worker import whisper

    s = VoiceSettings(voice_stt_model=model)
    engine = whisper(s)
    utterances = [asyncio.run(speech16k(t)) for t in SENTENCES]
    engine.decode(utterances[0])  # warm-up
    per_interim: list[float] = []
    rows = []
    for pcm in utterances:
        secs = len(pcm) / 2 / STT_RATE
        steps = np.arange(every_s, secs, every_s)
        interim_cpu, finals = 0.0, []
        for _ in range(rounds):
            for at in steps:  # the utterance so far, its last WINDOW_S
                lo = max(0, int((at - WINDOW_S) * STT_RATE)) * 2
                took, _ = cpu(engine.decode, pcm[lo:int(at * STT_RATE) * 2])
                per_interim.append(took)
                interim_cpu += took
            finals.append(cpu(engine.decode, pcm)[0])
        rows.append((secs, len(steps), interim_cpu / rounds, statistics.median(finals)))
    print(f"model {model}, beam {s.voice_stt_beam}, context {s.voice_stt_context_s} s, "
          f"interim every {every_s} s of speech")
    print(f"{'speech s':>8} {'interims':>8} {'interims CPU-s':>14} {'final CPU-s':>11} "
          f"{'ratio':>6}")
    for secs, n, i_cpu, f_cpu in rows:
        print(f"{secs:8.1f} {n:8d} {i_cpu:14.3f} {f_cpu:11.3f} {i_cpu / f_cpu:6.2f}")
    total_speech = sum(r[0] for r in rows)
    total_i = sum(r[2] for r in rows)
    print(f"CPU-s per interim: median {statistics.median(per_interim):.3f}, "
          f"max {max(per_interim):.3f}; interims: {total_i:.2f} CPU-s for {total_speech:.1f} s "
          f"of speech = {total_i / total_speech:.3f} CPU-s per second of caller speech; "
          f"finals {sum(r[3] for r in rows):.2f} CPU-s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=VoiceSettings().voice_stt_model)
    ap.add_argument("--every", type=float, default=VoiceSettings().voice_interim_s)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    run(a.model, a.every, max(1, min(a.rounds, 10)))


if __name__ == "__main__":
    main()
