"""The speech engines' threads at a lower CPU priority than the calls' audio.

At 4 calls on 2 cores the largest and most variable stage of an answer is the room path (the
caller's WebRTC, LiveKit's SFU, the voice worker's WebRTC, FFI and event-loop threads, the
VAD): 0.3-1.6 s from the caller's end of speech to the VAD's when the cores are contended,
~150 ms at 1 call (docs/voice.md, "Session 17: four calls at once"). Whisper's decodings
(CTranslate2's replica threads: ~0.2-0.7 s of a core each, and interim decodings while the
callers speak) are the bulk work that contends with it. Linux's scheduler gives a thread
of nice 10 about a tenth of a nice-0 thread's share when both want a core, and lets a waking
nice-0 thread preempt it sooner: the audio frames of every call are served first, the
decodings take what is left (most of a core at 4 calls: the audio path is ~0.1 core a call).

Niceness is per thread on Linux (``setpriority(PRIO_PROCESS, 0, n)`` sets the calling
thread's) and a new thread inherits its creator's. CTranslate2 and onnxruntime create their
worker threads when a model loads, so :func:`load_niced` loads the engines in a short-lived
thread of that niceness: their threads are born niced and the rest of the process (the calls'
loops, LiveKit's runtime, WebRTC, Silero) keeps its own. Raising a priority back needs
``CAP_SYS_NICE``; lowering one does not.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def load_niced(make: Callable[[], T], nice: int) -> T:
    """``make()`` in a new thread whose niceness is raised by ``nice`` (0: in this thread,
    unchanged): the threads it starts inherit that niceness. Its exception is raised here."""
    if nice == 0 or not sys.platform.startswith("linux"):
        return make()
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + nice)
            out.append(make())
        except BaseException as exc:  # handed to the caller's thread, raised there
            err.append(exc)

    t = threading.Thread(target=run, name="agentia-engine-load", daemon=True)
    t.start()
    t.join()  # loading is bounded by make(): a model from local files
    if err:
        raise err[0]
    return out[0]


def thread_nices() -> dict[int, tuple[str, int]]:
    """This process's threads: id → (name, niceness), from /proc/self/task (for tests and
    benchmarks; empty where there is no /proc)."""
    found: dict[int, tuple[str, int]] = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in tids:
        try:
            stat = Path(f"/proc/self/task/{tid}/stat").read_text()
        except OSError:  # ended meanwhile
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        found[int(tid)] = (name, int(stat[stat.rindex(")") + 2:].split()[16]))
    return found
