"""numpy's BLAS runs on the calling thread in a process that loads Whisper (voice/blas.py):
its thread pool spun on the 2 cores that the calls' audio and CTranslate2 need (no room)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy  # noqa: F401  (loads its OpenBLAS)
import pytest

from voice import blas

PROBE = """
import ctypes, sys
import numpy
from voice import blas, worker
from voice.settings import VoiceSettings

def threads():
    for path in blas.loaded_openblas():
        lib = ctypes.CDLL(path)
        for name in blas.SETTERS:
            get = getattr(lib, name.replace("_set_", "_get_"), None)
            if get is not None:
                return get()
    return None

before = threads()
worker.whisper(VoiceSettings(voice_stt_model="tiny.en"))
print(before, threads())
"""


def test_numpys_openblas_is_found_and_set_to_one_thread() -> None:
    found = blas.loaded_openblas()
    if not found:
        pytest.skip("this numpy uses no OpenBLAS")
    assert blas.single_threaded() == found


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="OpenBLAS runs one thread anyway")
def test_loading_whisper_leaves_blas_on_one_thread() -> None:
    # a fresh process: this one's BLAS may have been set by another test already
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         timeout=120, check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": ""})
    before, after = out.stdout.split()[-2:]
    if before == "None":
        pytest.skip("this numpy uses no OpenBLAS")
    assert int(before) == os.cpu_count()  # OpenBLAS's default: one thread per core
    assert after == "1"
