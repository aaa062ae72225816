"""Utterances of several calls that end together, through the voice worker's engine pool.

    .venv/bin/python -m loadtest.bench_batch [--together 4] [--groups 15] [--engines 2] [--record]

Whisper as the worker loads it (``voice.worker.stt_pool``: one model, ``AGENTIA_VOICE_STT_ENGINES``
replicas, default 2) transcribes groups of ``--together`` utterances of
``loadtest/wer_sentences.txt`` (espeak-ng, as in ``loadtest.bench_wer``) submitted at the same
moment from as many threads, as calls whose speech ends together do. Each group is decoded
twice, alternately first: with the pool batching what waits (``max_batch`` 4, the worker's) and
one utterance at a time (``max_batch`` 1, as before batching). Reported per mode: the time from
the submission to the last transcript of a group (what the slowest of those callers waits) and
to each transcript, the process CPU per utterance, the batches formed, and the WER. The machine
is shared: compare the two modes of one run. ``--record`` writes
``loadtest/results/voice-batch.json`` (``--record-as`` another name).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from typing import Any

from loadtest.bench_wer import utterances, wer
from voice.engines import EnginePool
from voice.settings import VoiceSettings
from voice.speech import to_mono16k
from voice.stt_whisper import MAX_BATCH

MODES = {"batched": MAX_BATCH, "one at a time": 1}


def _group(pool: EnginePool, pcms: list[bytes]) -> tuple[list[str], list[float], float]:
    """Decode ``pcms`` from one thread each, started together: (texts, seconds from the
    start to each, CPU seconds of the process)."""
    texts, took = [""] * len(pcms), [0.0] * len(pcms)
    start = threading.Barrier(len(pcms) + 1)

    def one(i: int) -> None:
        start.wait()
        texts[i] = pool.decode(pcms[i])
        took[i] = time.perf_counter() - t0

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(pcms))]
    for t in threads:
        t.start()
    c, t0 = time.process_time(), time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    return texts, took, time.process_time() - c


def _ms(samples: list[float], q: int) -> float:
    return round(statistics.quantiles(samples, n=100, method="inclusive")[q - 1] * 1000, 1)


def run(together: int, groups: int, engines: int) -> dict[str, Any]:
    from voice.worker import stt_pool

    pool = stt_pool(VoiceSettings(voice_stt_timeout_s=60, voice_stt_engines=engines))
    utts = utterances((together * groups + 1) // 2)[:together * groups]
    pcms = [to_mono16k(u[3]) for u in utts]
    res: dict[str, dict[str, Any]] = {m: {"last": [], "each": [], "cpu": [], "pairs": [],
                                          "batches": {}} for m in MODES}
    for g in range(0, len(pcms) - together + 1, together):
        order = list(MODES) if (g // together) % 2 == 0 else list(MODES)[::-1]
        for mode in order:
            pool.max_batch, pool.batches = MODES[mode], {}
            texts, took, cpu = _group(pool, pcms[g:g + together])
            r = res[mode]
            r["last"].append(max(took))
            r["each"] += took
            r["cpu"].append(cpu / together)
            r["pairs"] += [(u[0], t) for u, t in zip(utts[g:g + together], texts, strict=True)]
            for size, n in pool.batches.items():
                r["batches"][size] = r["batches"].get(size, 0) + n
    return {"together": together, "groups": len(res["batched"]["last"]), "engines": pool.size,
            "model": pool.model, "load_avg": os.getloadavg()[0], "modes": {
                m: {"last_transcript_ms": {"p50": _ms(r["last"], 50), "p90": _ms(r["last"], 90)},
                    "each_transcript_ms": {"p50": _ms(r["each"], 50), "p90": _ms(r["each"], 90)},
                    "cpu_ms_per_utterance": {"p50": _ms(r["cpu"], 50), "p90": _ms(r["cpu"], 90)},
                    "batches_by_size": {str(k): v for k, v in sorted(r["batches"].items())},
                    "wer": round(wer(r["pairs"]), 4)}
                for m, r in res.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--together", type=int, default=4, help="utterances ending together (2-8)")
    ap.add_argument("--groups", type=int, default=15, help="groups of them (2-60)")
    ap.add_argument("--engines", type=int, default=VoiceSettings().voice_stt_engines,
                    help="AGENTIA_VOICE_STT_ENGINES of the pool (1-4)")
    ap.add_argument("--record", action="store_true", help="write results/NAME.json")
    ap.add_argument("--record-as", default="voice-batch", metavar="NAME")
    a = ap.parse_args()
    if not (2 <= a.together <= 8 and 2 <= a.groups <= 60 and 1 <= a.engines <= 4):
        ap.error("--together in [2, 8], --groups in [2, 60], --engines in [1, 4]")
    figures = run(a.together, a.groups, a.engines)
    for mode, f in figures["modes"].items():
        print(f"{mode:14} last transcript p50 {f['last_transcript_ms']['p50']} ms, each p50 "
              f"{f['each_transcript_ms']['p50']} ms, CPU/utterance p50 "
              f"{f['cpu_ms_per_utterance']['p50']} ms, batches {f['batches_by_size']}, "
              f"WER {f['wer']:.3f}", flush=True)
    if a.record:
        from loadtest.record import record

        path = record(a.record_as, figures, notes=(
            "groups of utterances submitted together to the worker pool, batched vs one at "
            "a time, alternately first; CPU is the process CPU per utterance"))
        print(f"recorded {path}")


if __name__ == "__main__":
    main()
