"""GC probe for load runs, loaded by Python at start (``sitecustomize``) in every process whose
``PYTHONPATH`` holds this directory (``python -m loadtest.locust.run --gc-probe``): it times
each garbage collection from outside the code under test, so two trees (``--tree``) are
measured the same way whether or not they meter their own pauses.

Writes ``$AGENTIA_GC_PROBE_DIR/gc-<pid>.jsonl``: one line per collection of generation 1 or 2
and per gen-0 collection of at least 5 ms (``t``, ``gen``, ``pause_s``, ``collected``,
``walked``: objects tracked in the collected generations when it began, counted only for
generation >= 1, before the clock starts), and at exit one ``summary`` line (collections,
longest and total pause per generation). On SIGUSR2 (the runner sends it once the storm's
connections are all open: ``trees.Snapshot``) one ``sizes`` line: the objects tracked in each
generation now, i.e. what the next collection of that generation will walk. Never imported by
the product.
"""

from __future__ import annotations

import atexit
import gc
import json
import os
import signal
import time

_DIR = os.environ.get("AGENTIA_GC_PROBE_DIR", "")
_WALKED = os.environ.get("AGENTIA_GC_PROBE_WALKED", "1") == "1"
_started = 0.0
_walked = 0
_count = [0, 0, 0]
_longest = [0.0, 0.0, 0.0]
_total = [0.0, 0.0, 0.0]


def _write(row: dict[str, object]) -> None:
    with open(os.path.join(_DIR, f"gc-{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")


def _callback(phase: str, info: dict[str, int]) -> None:
    global _started, _walked
    gen = info["generation"]
    if phase == "start":
        _walked = sum(len(gc.get_objects(g)) for g in range(gen + 1)) if gen and _WALKED else 0
        _started = time.perf_counter()
        return
    pause = time.perf_counter() - _started
    _count[gen] += 1
    _total[gen] += pause
    _longest[gen] = max(_longest[gen], pause)
    if gen or pause >= 0.005:
        _write({"t": round(time.time(), 3), "gen": gen, "pause_s": round(pause, 4),
                "collected": info["collected"], "walked": _walked})


def _summary() -> None:
    _write({"summary": True, "collections": _count, "longest_s": [round(x, 4) for x in _longest],
            "total_s": [round(x, 3) for x in _total]})


def _sizes(signum: int, frame: object) -> None:
    _write({"sizes": [len(gc.get_objects(g)) for g in range(3)], "t": round(time.time(), 3),
            "count": list(gc.get_count()), "threshold": list(gc.get_threshold()),
            "frozen": gc.get_freeze_count()})


if _DIR:
    gc.callbacks.append(_callback)
    atexit.register(_summary)
    signal.signal(signal.SIGUSR2, _sizes)
