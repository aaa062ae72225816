"""The speech engines' threads run at a priority of their own (voice/priority.py): Whisper's
decodings and espeak-ng's syntheses against the calls' audio when the cores are contended."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import cast

import pytest

from agentia.settings import SettingsError
from voice import worker
from voice.priority import call_niced, load_niced, thread_nices
from voice.settings import VoiceSettings
from voice.speech import EspeakTTS

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


WRAPPER = """#!/bin/sh
awk '{print $19}' /proc/$$/stat >> "$AGENTIA_TEST_NICE_OUT"
exec %s "$@"
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice is Linux's")
async def test_espeak_ng_runs_at_the_tts_niceness(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The real espeak-ng, through a wrapper on PATH that writes its process's niceness."""
    real = shutil.which("espeak-ng")
    assert real is not None
    (tmp_path / "espeak-ng").write_text(WRAPPER % real)
    (tmp_path / "espeak-ng").chmod(0o755)
    out = tmp_path / "nices"
    monkeypatch.setenv("AGENTIA_TEST_NICE_OUT", str(out))
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    me = os.getpriority(os.PRIO_PROCESS, 0)
    plain = await EspeakTTS(nice=0).synthesize("what time is it").collect()
    lower = await EspeakTTS(nice=5).synthesize("what time is it").collect()
    higher = await EspeakTTS(nice=-5).synthesize("what time is it").collect()
    nices = [int(n) for n in out.read_text().split()]
    assert nices[:2] == [me, me + 5], nices
    # a higher priority needs CAP_SYS_NICE (root here); without it espeak-ng runs as it is
    assert nices[2] in ({me - 5} if _can_raise() else {me}), nices
    # the same speech at any priority, and the threads that ran it are back at theirs
    assert plain.data.tobytes() == lower.data.tobytes() == higher.data.tobytes()
    assert {n for _, n in thread_nices().values()} == {me}


def test_the_voice_worker_synthesises_at_the_tts_niceness() -> None:
    assert isinstance(tts := worker.synthesiser(VoiceSettings()), EspeakTTS)
    assert tts.nice == -5
    assert cast(EspeakTTS, worker.synthesiser(VoiceSettings(voice_tts_nice=0))).nice == 0
    with pytest.raises(SettingsError, match="AGENTIA_VOICE_TTS_NICE"):
        VoiceSettings(voice_tts_nice=-21).validate()


def test_call_niced_restores_the_threads_niceness(monkeypatch: pytest.MonkeyPatch,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    me = os.getpriority(os.PRIO_PROCESS, 0)
    assert call_niced(lambda: os.getpriority(os.PRIO_PROCESS, 0), 3) == me + 3
    assert os.getpriority(os.PRIO_PROCESS, 0) == me
    with pytest.raises(ValueError, match="synthesis failed"):
        call_niced(lambda: (_ for _ in ()).throw(ValueError("synthesis failed")), 2)
    assert os.getpriority(os.PRIO_PROCESS, 0) == me

    def refuse(*_: int) -> None:  # an unprivileged worker: the kernel refuses a raise
        raise PermissionError(13, "Permission denied")

    caplog.set_level(logging.INFO, "agentia.voice")
    monkeypatch.setattr(os, "setpriority", refuse)
    assert call_niced(lambda: os.getpriority(os.PRIO_PROCESS, 0), -7) == me
    assert call_niced(lambda: 1, -7) == 1
    assert caplog.text.count("needs CAP_SYS_NICE") == 1  # once, not per synthesis


def _can_raise() -> bool:
    me = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        return call_niced(lambda: os.getpriority(os.PRIO_PROCESS, 0), -1) == me - 1
    except PermissionError:
        return False
