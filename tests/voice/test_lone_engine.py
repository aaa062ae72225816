"""A final decoding that starts alone runs on the lone engine's two threads; of two at once,
the second runs on a 1-thread engine (voice.engines.EnginePool's ``lone``,
``AGENTIA_VOICE_STT_LONE_THREADS``), the real Whisper model (tiny.en), counted by the CPU each
of the process's threads spent (/proc/self/task), not by time."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, os, sys, threading
import numpy as np
from voice import worker
from voice.settings import VoiceSettings

def cpu():  # CPU ticks of each thread of this process
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        out[int(tid)] = int(f[11]) + int(f[12])
    return out

def used(run):
    c0 = cpu()
    run()
    c1 = cpu()
    return {t: c1[t] - c0.get(t, 0) for t in c1 if c1[t] > c0.get(t, 0)}

pool = worker.stt_pool(VoiceSettings(voice_stt_model="tiny.en", voice_executor="thread",
                                     voice_stt_engines=2, voice_stt_nice=0,
                                     voice_stt_lone_threads=int(sys.argv[1])))
pcm = (np.sin(np.arange(16000 * 3) / 7) * 3000).astype(np.int16).tobytes()
me = threading.get_native_id()

def pair():
    go = threading.Barrier(2)
    ts = [threading.Thread(target=lambda: (go.wait(), pool.decode(pcm))) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()

alone = used(lambda: [pool.decode(pcm) for _ in range(4)])
lone_alone = pool.lone_runs
pairs = []
for _ in range(3):
    runs = pool.lone_runs
    pairs.append({"cpu": used(pair), "lone_runs": pool.lone_runs - runs})
print(json.dumps({"me": me, "alone": alone, "lone_alone": lone_alone, "pairs": pairs}))
"""


def _probe(lone_threads: int) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(lone_threads)], capture_output=True,
                         text=True, timeout=180, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _engine_threads(cpu: object, me: object) -> dict[int, int]:
    """Threads that spent CPU, the caller's (the features: numpy) left out."""
    assert isinstance(cpu, dict)
    return {int(t): int(v) for t, v in cpu.items() if int(t) != me}


def _busy(cpu: dict[int, int], share: float) -> set[int]:
    total = sum(cpu.values())
    return {t for t, v in cpu.items() if v >= share * total > 0}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/task")
def test_a_lone_final_decodes_on_two_threads_and_the_second_of_two_on_one() -> None:
    got = _probe(2)
    alone = _engine_threads(got["alone"], got["me"])
    assert got["lone_alone"] == 4  # nothing else ran: each on the lone engine
    lone = _busy(alone, 0.25)
    assert len(lone) == 2, alone  # its two threads shared the work
    assert sum(alone[t] for t in lone) >= 0.8 * sum(alone.values()), alone
    pairs = got["pairs"]
    assert isinstance(pairs, list) and len(pairs) == 3
    for p in pairs:
        assert p["lone_runs"] == 1, p  # the first of the two found nothing running
        cpu = _engine_threads(p["cpu"], got["me"])
        others = sum(v for t, v in cpu.items() if t not in lone)
        # the second: on the 1-thread replicas' threads (its encoder and its decoder may run
        # on either, one after the other), not on the lone engine's two
        assert others >= 0.25 * sum(cpu.values()), (p, lone)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/task")
def test_lone_threads_1_is_off_every_final_on_one_thread() -> None:
    got = _probe(1)
    assert got["lone_alone"] == 0
    alone = _engine_threads(got["alone"], got["me"])
    # each of the four on one thread of a 1-thread engine: no thread beside it did a share
    busy = _busy(alone, 0.1)
    assert 1 <= len(busy) <= 2, alone  # either replica's one thread, one utterance at a time
