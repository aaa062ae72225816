"""CPU cost of the caller's interim transcripts (voice/interim.py) per utterance and per call.

    .venv/bin/python -m loadtest.bench_interim [--model base] [--every 1.0] [--rounds 3]
        [--decodings quick,full] [--record]

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
from typing import Any

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


def run(model: str, every_s: float, rounds: int, decodings: list[str],
        record_it: bool = False) -> None:
    """``decodings``: ``quick`` (what interims use: ``WhisperSTT.decode_quick``) and/or
    ``full`` (the final's decoding, what interims used before), interleaved per utterance."""
    from voice.worker import whisper

    s = VoiceSettings(voice_stt_model=model)
    engine = whisper(s)
    how = {"quick": getattr(engine, "decode_quick", engine.decode), "full": engine.decode}
    utterances = [asyncio.run(speech16k(t)) for t in SENTENCES]
    engine.decode(utterances[0])  # warm-up
    per_interim: dict[str, list[float]] = {d: [] for d in decodings}
    rows: dict[str, list[tuple[float, int, float, float]]] = {d: [] for d in decodings}
    last: dict[str, list[str]] = {d: [] for d in decodings}
    for pcm in utterances:
        secs = len(pcm) / 2 / STT_RATE
        steps = np.arange(every_s, secs, every_s)
        interim_cpu = dict.fromkeys(decodings, 0.0)
        finals: list[float] = []
        text = ""
        for _ in range(rounds):
            for d in decodings:
                for at in steps:  # the utterance so far, its last WINDOW_S
                    lo = max(0, int((at - WINDOW_S) * STT_RATE)) * 2
                    took, text = cpu(how[d], pcm[lo:int(at * STT_RATE) * 2])
                    per_interim[d].append(took)
                    interim_cpu[d] += took
                if len(last[d]) < len(rows[d]) + 1:
                    last[d].append(text)
            finals.append(cpu(engine.decode, pcm)[0])
        for d in decodings:
            rows[d].append((secs, len(steps), interim_cpu[d] / rounds, statistics.median(finals)))
    figures: dict[str, Any] = {"model": model, "every_s": every_s, "rounds": rounds,
                               "final_beam": s.voice_stt_beam,
                               "final_context_s": s.voice_stt_context_s}
    for d in decodings:
        total_speech = sum(r[0] for r in rows[d])
        figures[d] = {
            "cpu_s_per_interim_p50": round(statistics.median(per_interim[d]), 4),
            "cpu_s_per_interim_max": round(max(per_interim[d]), 4),
            "cpu_s_per_speech_s": round(sum(r[2] for r in rows[d]) / total_speech, 4),
            "finals_cpu_s": round(sum(r[3] for r in rows[d]), 3),
            "last_interims": last[d]}
    if record_it:
        from loadtest.record import record
        record("voice-interim", figures, notes="interims' CPU (this process, all threads) for "
               "the same utterances, decodings interleaved per utterance")
    for d in decodings:
        print(f"model {model}, interims decoded {d}, final beam {s.voice_stt_beam}, context "
              f"{s.voice_stt_context_s} s, interim every {every_s} s of speech")
        print(f"{'speech s':>8} {'interims':>8} {'interims CPU-s':>14} {'final CPU-s':>11} "
              f"{'ratio':>6}  last interim")
        for (secs, n, i_cpu, f_cpu), said in zip(rows[d], last[d], strict=True):
            print(f"{secs:8.1f} {n:8d} {i_cpu:14.3f} {f_cpu:11.3f} {i_cpu / f_cpu:6.2f}  {said!r}")
        total_speech = sum(r[0] for r in rows[d])
        total_i = sum(r[2] for r in rows[d])
        print(f"CPU-s per interim: median {statistics.median(per_interim[d]):.3f}, "
              f"max {max(per_interim[d]):.3f}; interims: {total_i:.2f} CPU-s for "
              f"{total_speech:.1f} s of speech = {total_i / total_speech:.3f} CPU-s per second "
              f"of caller speech; finals {sum(r[3] for r in rows[d]):.2f} CPU-s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=VoiceSettings().voice_stt_model)
    ap.add_argument("--every", type=float, default=VoiceSettings().voice_interim_s)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--decodings", default="quick",
                    help="comma-separated: quick (the interims' decoding), full (the final's)")
    ap.add_argument("--record", action="store_true",
                    help="write loadtest/results/voice-interim.json (loadtest/record.py)")
    a = ap.parse_args()
    run(a.model, a.every, max(1, min(a.rounds, 10)),
        [d for d in a.decodings.split(",") if d in ("quick", "full")] or ["quick"], a.record)


if __name__ == "__main__":
    main()
