"""The speech engines' threads run below the calls' priority (voice/priority.py): Whisper's
decodings yield the cores to the calls' audio when they are contended."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading

import pytest

from voice.priority import load_niced, thread_nices

PROBE = """
import json, os, sys, time
import numpy as np
from voice import worker
from voice.priority import thread_nices
from voice.settings import VoiceSettings

def cpu():  # CPU ticks of each thread of this process
    out = {}
    for tid in os.listdir("/proc/self/task"):
        f = open(f"/proc/self/task/{tid}/stat").read().rsplit(")", 1)[1].split()
        out[int(tid)] = int(f[11]) + int(f[12])
    return out

before = set(thread_nices())
pool = worker.stt_pool(VoiceSettings(voice_stt_model="tiny.en", voice_executor="thread",
                                     voice_stt_engines=2, voice_stt_nice=int(sys.argv[1])))
born = {t: n for t, (_, n) in thread_nices().items() if t not in before}
pcm = (np.sin(np.arange(16000 * 3) / 7) * 3000).astype(np.int16).tobytes()
c0 = cpu()
for _ in range(3):
    pool.decode(pcm)
c1 = cpu()
used = {t: c1[t] - c0.get(t, 0) for t in c1}
# a thread's niceness at the end: a replica's thread can be missing from the listing taken
# right after the load (seen in CI), yet it was born of the loading thread, with its niceness
nices = {t: n for t, (_, n) in thread_nices().items()}
print(json.dumps({"main": os.getpriority(os.PRIO_PROCESS, 0), "born": born,
                  "niced_cpu": sum(v for t, v in used.items() if nices.get(t, 0) > 0),
                  "all_cpu": sum(used.values())}))
"""


def _probe(nice: int) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(nice)], capture_output=True,
                         text=True, timeout=180, check=True)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_whisper_decodes_on_threads_niced_by_the_setting() -> None:
    got = _probe(10)
    born = got["born"]
    assert isinstance(born, dict) and born, "loading Whisper started no thread of its own"
    assert set(born.values()) == {10}, born
    assert got["main"] == 0  # the process's other threads keep their priority
    # the decoding itself runs on those threads, not on the caller's (nice 0) thread
    assert isinstance(got["niced_cpu"], int) and isinstance(got["all_cpu"], int)
    assert got["niced_cpu"] >= 0.7 * got["all_cpu"] > 0, got


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_nice_0_leaves_the_engines_at_the_calls_priority() -> None:
    born = _probe(0)["born"]
    assert isinstance(born, dict) and born
    assert set(born.values()) == {0}, born


def test_load_niced_returns_and_raises_in_the_callers_thread() -> None:
    me = threading.get_ident()
    seen: list[int] = []

    def make() -> int:
        seen.append(threading.get_ident())
        return os.getpriority(os.PRIO_PROCESS, 0)

    assert load_niced(make, 0) == os.getpriority(os.PRIO_PROCESS, 0)
    assert seen == [me]  # 0: in this thread
    if sys.platform.startswith("linux"):
        assert load_niced(make, 3) == os.getpriority(os.PRIO_PROCESS, 0) + 3
        assert seen[-1] != me
    with pytest.raises(ValueError, match="bad model"):
        load_niced(lambda: (_ for _ in ()).throw(ValueError("bad model")), 5)
    assert os.getpriority(os.PRIO_PROCESS, 0) == thread_nices()[threading.get_native_id()][1]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
def test_a_higher_priority_without_the_right_is_logged_not_a_failure(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, "agentia.voice")
    me = os.getpriority(os.PRIO_PROCESS, 0)
    got = load_niced(lambda: os.getpriority(os.PRIO_PROCESS, 0), -1)
    if got == me - 1:  # CAP_SYS_NICE (root here): raised
        assert not caplog.records
    else:
        assert got == me
        assert "needs CAP_SYS_NICE" in caplog.text
    # without the right (an unprivileged worker): setpriority refuses, as the kernel does
    def refuse(*_: int) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "setpriority", refuse)
    caplog.clear()
    assert load_niced(lambda: os.getpriority(os.PRIO_PROCESS, 0), -3) == me
    assert "needs CAP_SYS_NICE" in caplog.text
