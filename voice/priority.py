"""The speech engines' threads at a CPU priority of their own (``AGENTIA_VOICE_STT_NICE``).

At 4 calls on 2 cores an answer's extra time over one call's is the transcript: each Whisper
decoding (CTranslate2's replica threads, ~0.2 CPU-s) shares the cores with the calls' audio
(WebRTC, LiveKit's runtime, the event loops, Silero) and the other decodings, and its wall time
grows from ~200-250 ms alone to ~280-500 ms. Measured on a quiet box (docs/voice.md, "Session
18"): the decodings at nice +10 made that worse and did not shorten the room path (the caller's
end of speech → the VAD's end stayed at its 1-call ~150-180 ms); at nice -5 the decodings'
median was lower in 7 of 8 pairs of levels, the room path showed no consistent cost. So by
default the decodings come first.

Niceness is per thread on Linux (``setpriority(PRIO_PROCESS, 0, n)`` sets the calling
thread's) and a new thread inherits its creator's. CTranslate2 creates its replicas' worker
threads when a model loads, so :func:`load_niced` loads the engines in a short-lived thread
of that niceness: their threads are born with it and the rest of the process (the calls'
loops, LiveKit's runtime, WebRTC, Silero) keeps its own. onnxruntime (Moonshine at 1 thread)
starts no thread at load: its decodings run on the calling thread, at the calls' priority. A
higher priority (negative) needs ``CAP_SYS_NICE``; a lower one does not.

A process inherits the niceness of the thread that starts it: :func:`call_niced` runs a
blocking call (espeak-ng's synthesis, ``AGENTIA_VOICE_TTS_NICE``) with this thread's niceness
changed for its duration, so the program it starts runs at that priority.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

log = logging.getLogger("agentia.voice")

T = TypeVar("T")


def load_niced(make: Callable[[], T], nice: int) -> T:
    """``make()`` in a new thread whose niceness is changed by ``nice`` (0: in this thread,
    unchanged): the threads it starts inherit that niceness. A negative ``nice`` (a higher
    priority) needs ``CAP_SYS_NICE``: without it ``make()`` runs at this thread's priority
    (logged: the priority is best effort, the worker runs either way). ``make()``'s
    exception is raised here."""
    if nice == 0 or not sys.platform.startswith("linux"):
        return make()
    out: list[T] = []
    err: list[BaseException] = []

    def run() -> None:
        try:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, os.getpriority(os.PRIO_PROCESS, 0) + nice)
            except PermissionError:  # a higher priority needs CAP_SYS_NICE (or RLIMIT_NICE)
                log.info("the speech engines' niceness %+d needs CAP_SYS_NICE: they run at "
                         "the calls' priority", nice)
            out.append(make())
        except BaseException as exc:  # handed to the caller's thread, raised there
            err.append(exc)

    t = threading.Thread(target=run, name="agentia-engine-load", daemon=True)
    t.start()
    t.join()  # loading is bounded by make(): a model from local files
    if err:
        raise err[0]
    return out[0]


_warned: set[int] = set()


def call_niced(fn: Callable[[], T], nice: int) -> T:
    """``fn()`` in this thread with its niceness changed by ``nice`` for the call's duration
    and restored after (always allowed: back to a lower priority); a process ``fn`` starts
    is born with the changed niceness and keeps it. Without ``CAP_SYS_NICE`` a negative
    ``nice`` is not applied (logged once) and ``fn()`` runs as it is."""
    if nice == 0 or not sys.platform.startswith("linux"):
        return fn()
    before = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(-20, min(19, before + nice)))
    except PermissionError:  # a higher priority needs CAP_SYS_NICE (or RLIMIT_NICE)
        if nice not in _warned:
            _warned.add(nice)
            log.info("the niceness %+d needs CAP_SYS_NICE: it runs at the calls' priority",
                     nice)
        return fn()
    try:
        return fn()
    finally:
        os.setpriority(os.PRIO_PROCESS, 0, before)


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
