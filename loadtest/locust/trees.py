"""Run one scenario against several checkouts (``--tree``, repeatable) in one invocation, and
time the edges' garbage collections from outside (``--gc-probe``: ``gcprobe/sitecustomize.py``).

    python -m loadtest.locust.run storm --connections 18000 --edges 2 --hold 30 \\
        --tree /work/main --tree . --gc-probe

Only the gateway runs from each tree (its working directory and ``PYTHONPATH``); Locust, the
runner and Redis are this checkout's, so the trees are measured by the same client.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

PROBE = Path(__file__).resolve().parent / "gcprobe"


def tree_env(tree: Path, probe_dir: Path | None) -> dict[str, str]:
    """The gateway's environment for ``tree``: its packages first, the probe before them."""
    paths = ([str(PROBE)] if probe_dir is not None else []) + [str(tree)]
    if os.environ.get("PYTHONPATH"):  # after the tree: it must not win over it
        paths.append(os.environ["PYTHONPATH"])
    env = {"PYTHONPATH": ":".join(paths)}
    if probe_dir is not None:
        env["AGENTIA_GC_PROBE_DIR"] = str(probe_dir)
    return env


def commit(tree: Path) -> str:
    """The tree's HEAD, with ``+dirty`` if it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tree), *args], capture_output=True,
                              text=True, check=False).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("+dirty" if git("status", "--porcelain",
                                                                  "--untracked-files=no") else "")


def cpu_ticks() -> list[int]:
    """The machine's CPU time so far (``/proc/stat``, all cores), in ticks by state."""
    with open("/proc/stat") as f:
        return [int(x) for x in f.readline().split()[1:]]


def idle_share(before: list[int], after: list[int]) -> float:
    """The share of the machine's CPU time idle (or waiting for I/O) between two readings:
    on a shared box, how much of it the run had to compete for."""
    d = [b - a for a, b in zip(before, after, strict=False)]
    return round((d[3] + d[4]) / max(1, sum(d)), 3)


class Snapshot(threading.Thread):
    """Once the edges hold ``target`` connections for ``settle`` seconds: SIGUSR2 to each edge,
    whose probe then writes how many objects each generation holds (bounded: gives up after
    ``timeout`` seconds)."""

    def __init__(self, pids: list[int], open_now: Callable[[int], float], target: int,
                 settle: float = 5.0, timeout: float = 600.0) -> None:
        super().__init__(daemon=True)
        self.pids, self.open_now, self.target = pids, open_now, target
        self.settle, self.timeout = settle, timeout

    def run(self) -> None:
        deadline, full_since = time.monotonic() + self.timeout, None
        while time.monotonic() < deadline:
            time.sleep(0.5)
            counts = [self.open_now(p) for p in self.pids]
            if sum(c for c in counts if c == c) < 0.99 * self.target:  # nan: not yet set
                full_since = None
            elif full_since is None:
                full_since = time.monotonic()
            elif time.monotonic() - full_since >= self.settle:
                for pid in self.pids:
                    os.kill(pid, signal.SIGUSR2)
                return


def gc_pauses(probe_dir: Path, pids: list[int], window: tuple[float, float]
              ) -> dict[str, Any]:
    """Per edge, collections while Locust ran (``window``, Unix times; start-up and shutdown
    excluded): the longest pause of each generation, every gen-1/2 collection (pause, objects
    walked), the generation sizes the probe saw once the storm was open; ``longest_s``: the
    longest pause over all edges."""
    edges: dict[str, Any] = {}
    for pid in pids:
        path = probe_dir / f"gc-{pid}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()] \
            if path.exists() else []
        runs = [r for r in rows if "gen" in r and window[0] <= r["t"] <= window[1]]
        edges[str(pid)] = {
            "longest_s_by_gen": [max((r["pause_s"] for r in runs if r["gen"] == g), default=0.0)
                                 for g in range(3)],
            "gen0_over_5ms": sum(r["gen"] == 0 for r in runs),
            "gen1_or_2": [{k: r[k] for k in ("gen", "pause_s", "walked", "collected")}
                          for r in runs if r["gen"] > 0],
            "sizes_when_open": next((r for r in rows if "sizes" in r), None),
            "longest_s": max((r["pause_s"] for r in runs), default=0.0)}
    return {"edges": edges, "longest_s": max((e["longest_s"] for e in edges.values()),
                                             default=0.0)}
