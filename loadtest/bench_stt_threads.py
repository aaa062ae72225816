"""Whisper's decode with 1 vs 2 CTranslate2 threads, alternated utterance by utterance.

    .venv/bin/python -m loadtest.bench_stt_threads [--sentences 15] [--rounds 2] [--together 2]
                                                   [--record]

The model as the voice worker loads it (``voice.worker.whisper``: base, 2 engines), once with
``AGENTIA_VOICE_STT_THREADS=1`` and once with 2, decodes the espeak-ng sentences of
``loadtest.bench_wer`` one at a time, the two alternated per utterance (first one, then the
other) so that a shared machine's load falls on both alike; ``--together 2``: two utterances at
once from two threads (both engines busy, as with several calls: 4 threads on 2 cores with 2
threads each), the time to the later transcript. Reported: wall and process CPU per decode
(p50; with ``--together 2`` the pair's wall, CPU per utterance), the paired ratio of the walls
(2 threads / 1, p50 and quartiles), the WER of each, and the machine's idle share over the
run. ``--record`` writes
``loadtest/results/voice-stt-threads.json``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

from loadtest.bench_wer import utterances, wer
from voice.settings import VoiceSettings
from voice.speech import to_mono16k

THREADS = (1, 2)


def _cpu_idle() -> tuple[int, int]:
    """(idle, total) jiffies of the machine (/proc/stat)."""
    with open("/proc/stat") as stat:
        f = [int(x) for x in stat.readline().split()[1:]]
    return f[3] + f[4], sum(f)


def _decode(model: Any, pcms: list[bytes]) -> list[str]:
    """``pcms`` decoded at once, one thread each (the pool's engines busy together)."""
    if len(pcms) == 1:
        return [model.decode(pcms[0])]
    texts = [""] * len(pcms)

    def one(k: int) -> None:
        texts[k] = model.decode(pcms[k])

    threads = [threading.Thread(target=one, args=(k,)) for k in range(len(pcms))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return texts


def run(sentences: int, rounds: int, together: int = 1) -> dict[str, Any]:
    from voice.worker import whisper

    utts = utterances(sentences)
    pcms = [to_mono16k(u[3]) for u in utts]
    models = {t: whisper(VoiceSettings(voice_stt_threads=t), workers=2) for t in THREADS}
    for m in models.values():
        m.decode(pcms[0])  # warm
    wall: dict[int, list[float]] = {t: [] for t in THREADS}
    cpu: dict[int, list[float]] = {t: [] for t in THREADS}
    heard: dict[int, list[tuple[str, str]]] = {t: [] for t in THREADS}
    ratios = []
    idle0 = _cpu_idle()
    for r in range(rounds):
        for i in range(0, len(pcms) - together + 1, together):
            took = {}
            for t in THREADS if (i // together + r) % 2 == 0 else THREADS[::-1]:
                w, c = time.perf_counter(), time.process_time()
                texts = _decode(models[t], pcms[i:i + together])
                took[t] = time.perf_counter() - w
                wall[t].append(took[t])
                cpu[t].append((time.process_time() - c) / together)
                if r == 0:
                    heard[t] += [(u[0], text) for u, text in zip(utts[i:i + together], texts,
                                                                  strict=True)]
            ratios.append(took[2] / took[1])
    idle1 = _cpu_idle()

    def ms(xs: list[float]) -> float:
        return round(statistics.median(xs) * 1000, 1)

    q = statistics.quantiles(ratios, n=4)
    return {"utterances": len(pcms), "rounds": rounds, "together": together,
            "loadavg_1m": os.getloadavg()[0],
            "idle_share": round((idle1[0] - idle0[0]) / max(1, idle1[1] - idle0[1]), 3),
            "threads": {str(t): {"wall_ms_p50": ms(wall[t]), "cpu_ms_p50": ms(cpu[t]),
                                 "wer": round(wer(heard[t]), 4)} for t in THREADS},
            "wall_2_over_1": {"p50": round(statistics.median(ratios), 3),
                              "p25": round(q[0], 3), "p75": round(q[2], 3)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sentences", type=int, default=15, help="sentences (2 voices each)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--together", type=int, default=1, choices=(1, 2),
                    help="utterances decoded at once (2: both engines busy)")
    ap.add_argument("--record", action="store_true")
    ap.add_argument("--record-as", default="voice-stt-threads", metavar="NAME")
    a = ap.parse_args()
    if not (1 <= a.sentences <= 60 and 1 <= a.rounds <= 10):
        ap.error("--sentences in [1, 60], --rounds in [1, 10]")
    figures = run(a.sentences, a.rounds, a.together)
    print(figures, flush=True)
    if a.record:
        from loadtest.record import record

        print("recorded", record(a.record_as, figures, notes=(
            "Whisper base, 2 engines, 1 vs 2 CTranslate2 threads alternated per utterance")))


if __name__ == "__main__":
    main()
