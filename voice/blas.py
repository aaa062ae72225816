"""numpy's BLAS on the calling thread: the voice worker's matrix products are small.

faster-whisper's feature extractor multiplies each utterance's spectrogram by the mel filters
with numpy (``mel_filters @ magnitudes``: 80 x 201 by 201 x ~700), and numpy's OpenBLAS runs
that on a pool of one thread per core, whose threads then spin waiting for more work. On the
2-core box of session 17 (Whisper base, int8, 1 CTranslate2 thread) that cost the features
13.9 ms instead of 1.2 ms and a whole decoding ~283 instead of ~207 ms of process CPU (its wall
time 302 → 210 ms): the spinning took a core from CTranslate2's own thread and from every
other call's audio (docs/voice.md, "Session 17: four calls at once").

:func:`single_threaded` sets every OpenBLAS loaded in the process to one thread, through
OpenBLAS's own ``openblas_set_num_threads`` (what ``threadpoolctl`` does); a process whose
numpy uses another BLAS is left as it is.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

log = logging.getLogger("agentia.voice")

SETTERS = ("openblas_set_num_threads", "openblas_set_num_threads64_",
           "scipy_openblas_set_num_threads", "scipy_openblas_set_num_threads64_")
"""The names OpenBLAS builds export its setter under (numpy's wheels ship scipy-openblas,
whose symbols carry a ``scipy_`` prefix and, for 64-bit integers, a ``64_`` suffix)."""


def loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process (from /proc/self/maps)."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    return sorted({ln.split()[-1] for ln in maps
                   if "openblas" in ln.lower() and ln.split()[-1].startswith("/")})


def single_threaded() -> list[str]:
    """Set every loaded OpenBLAS to one thread; the libraries set (none where numpy is not
    loaded yet or uses another BLAS)."""
    import numpy  # noqa: F401  (its OpenBLAS must be loaded to be found)

    done = []
    for path in loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in SETTERS:
            if hasattr(lib, name):
                getattr(lib, name)(1)
                done.append(path)
                break
    if done:
        log.debug("BLAS set to one thread: %s", done)
    return done
