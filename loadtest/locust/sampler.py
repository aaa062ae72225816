"""What a Locust run measures from outside, twice a second: each edge's RSS, CPU seconds, open
fds and connections; the Locust processes' RSS and CPU; Redis's RSS; kernel slab. Read from
``/proc`` and from the edges' Prometheus multi-process files; written to ``samples.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from loadtest.proc_stats import cpu_s, rss_kib, slab_kib


class Edges(Protocol):
    """The gateway being sampled: its edge processes' PIDs (kept current across restarts)."""

    pids: list[int]


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def gauge(metrics_dir: Path | None, pid: int, metric: str = "agentia_connections") -> float:
    """A process's own value of a Prometheus gauge, read from its multi-process file (the edge
    updates ``agentia_connections`` once a second)."""
    if metrics_dir is None:
        return math.nan
    from prometheus_client.mmap_dict import MmapedDict

    for path in metrics_dir.glob(f"gauge_*_{pid}.db"):
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            values = MmapedDict.read_all_values_from_file(str(path))  # type: ignore[no-untyped-call]
            for key, value, *_ in values:
                if json.loads(key)[0] == metric:
                    return float(value)
    return math.nan


def _safe(fn: Any, pid: int) -> float:
    try:
        return float(fn(pid))
    except (OSError, ValueError, IndexError):
        return math.nan


class Sampler(threading.Thread):
    """Twice a second: each edge's RSS, CPU seconds, open fds and connections (its
    ``agentia_connections`` gauge); the Locust processes' RSS and CPU; Redis's RSS; kernel
    slab. Written to samples.csv as it goes."""

    def __init__(self, path: Path, edges: Edges, redis_pid: int, metrics_dir: Path | None,
                 interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.path, self.edges, self.redis_pid, self.interval = path, edges, redis_pid, interval
        self.metrics_dir = metrics_dir
        self.locust_pid = 0
        self.stopping = threading.Event()

    def sample(self) -> dict[str, float]:
        row: dict[str, float] = {"t": round(time.time(), 3)}
        for i, pid in enumerate(list(self.edges.pids)):
            row[f"edge_{i}_rss_kib"] = _safe(rss_kib, pid)
            row[f"edge_{i}_cpu_s"] = round(_safe(cpu_s, pid), 2)
            row[f"edge_{i}_fds"] = fds(pid)
            row[f"edge_{i}_conns"] = gauge(self.metrics_dir, pid)
        locust = [self.locust_pid, *children(self.locust_pid)] if self.locust_pid else []
        row["locust_rss_kib"] = sum(_safe(rss_kib, p) for p in locust) if locust else 0
        row["locust_cpu_s"] = round(sum(_safe(cpu_s, p) for p in locust), 2) if locust else 0
        row["redis_rss_kib"] = _safe(rss_kib, self.redis_pid)
        row["slab_kib"] = slab_kib()
        return row

    def run(self) -> None:
        first = self.sample()
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(first), extrasaction="ignore")
            w.writeheader()
            w.writerow(first)
            while not self.stopping.wait(self.interval):
                w.writerow(self.sample())
                f.flush()
