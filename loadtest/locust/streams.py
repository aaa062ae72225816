"""The runner's side of the stream scenarios (reconnect, slow): the event publisher, the
phase file that drives the Locust processes, and the verdict that compares what every lineage
received with the session logs in Redis. Never imports Locust.

The publisher appends events with :meth:`sessions.bus.Bus.append`, the call an agent worker
makes for every log event (``turn_start``, ``tool``, ``reply``; the same Lua script: log entry
``0-<offset>``, then a copy to the delivery stream of every edge node holding the session),
round-robin over the sessions at a steady rate. Each event is ``{"type": "delta", "turn": 0,
"ts": <unix time just before the append>, "text": <padding>}`` (a type today's clients ignore:
reply text no longer goes through the log, see docs/protocol.md ``chunk``): ``ts`` lets
clients measure append-to-arrival latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import math
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import redis

from sessions.bus import Bus, connect, frame_for
from sessions.keys import Keys

PHASE_FILE = "phase"


def set_phase(control: Path, phase: str) -> float:
    """Write the phase for the Locust processes (atomic rename); returns the wall time."""
    tmp = control / f"{PHASE_FILE}.tmp"
    tmp.write_text(phase + "\n")
    tmp.rename(control / PHASE_FILE)
    return round(time.time(), 3)


def counters(out: Path) -> dict[str, float]:
    """The last row of ``locust_agentia.csv`` (the master writes it once a second)."""
    path = out / "locust_agentia.csv"
    last: dict[str, float] = {}
    with contextlib.suppress(OSError, ValueError), path.open(newline="") as f:
        for row in csv.DictReader(f):
            with contextlib.suppress(ValueError, TypeError):
                last = {k: float(v) for k, v in row.items()}
    return last


def wait_for(pred: Any, timeout: float, every: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())


# ------------------------------------------------------------------ publisher


class Publisher(threading.Thread):
    """Appends ``rate`` events a second, round-robin over ``sessions``, until stopped; at most
    ``inflight`` appends at once (behind schedule: counted, not queued without bound)."""

    def __init__(self, redis_url: str, prefix: str, sessions: list[str], rate: float,
                 size: int, inflight: int = 64) -> None:
        super().__init__(daemon=True)
        self.redis_url, self.prefix, self.sessions = redis_url, prefix, sessions
        self.rate, self.inflight = rate, inflight
        self.text = "x" * max(0, size)
        self.stopping = threading.Event()
        self.appended = self.missing = self.errors = self.skipped = 0
        self.latency_ms: dict[float, int] = {}
        self.started_at = self.stopped_at = 0.0

    def run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        bus = Bus(connect(self.redis_url, max_connections=self.inflight), prefix=self.prefix)
        sem = asyncio.Semaphore(self.inflight)
        tasks: set[asyncio.Task[None]] = set()
        self.started_at = time.time()
        t0, n = time.perf_counter(), 0
        try:
            while not self.stopping.is_set():
                due = int((time.perf_counter() - t0) * self.rate)
                while n < due:
                    sid = self.sessions[n % len(self.sessions)]
                    n += 1
                    if sem.locked():
                        self.skipped += 1
                        continue
                    await sem.acquire()
                    task = asyncio.create_task(self._append(bus, sid, sem))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                await asyncio.sleep(0.005)
            if tasks:
                await asyncio.wait(tasks, timeout=10)
        finally:
            self.stopped_at = time.time()
            await bus.close()

    async def _append(self, bus: Bus, sid: str, sem: asyncio.Semaphore) -> None:
        try:
            t = time.time()
            offset = await bus.append(sid, {"type": "delta", "turn": 0, "ts": t,
                                            "text": self.text})
            ms = round((time.time() - t) * 1000, 1)
            self.latency_ms[ms] = self.latency_ms.get(ms, 0) + 1
            if offset > 0:
                self.appended += 1
            else:
                self.missing += 1  # the session is not open (yet)
        except Exception:
            self.errors += 1
        finally:
            sem.release()

    def stop(self) -> dict[str, Any]:
        self.stopping.set()
        self.join(30)
        secs = max(1e-9, self.stopped_at - self.started_at)
        return {"sessions": len(self.sessions), "rate_offered": self.rate,
                "appended": self.appended, "rate_achieved": round(self.appended / secs, 1),
                "missing_session": self.missing, "errors": self.errors,
                "skipped_behind": self.skipped, "event_bytes": len(self.text) + 60,
                "append_ms": {"p50": pct(self.latency_ms, 50), "p99": pct(self.latency_ms, 99)}}


def pct(hist: dict[float, int], p: float) -> float | None:
    total, seen = sum(hist.values()), 0
    for ms in sorted(hist):
        seen += hist[ms]
        if seen >= total * p / 100:
            return ms
    return None


# ------------------------------------------------------------------ verdict


def read_lineages(control: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(control.glob("lineages-*.jsonl")):
        out.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return out


def session_logs(redis_url: str, prefix: str, sids: set[str]
                 ) -> dict[str, dict[int, int]]:
    """Each session's log as {offset: CRC-32 of the frame a client gets for it}."""
    keys = Keys(prefix)
    r: Any = redis.Redis.from_url(redis_url)  # bytes replies (redis-py types them loosely)
    logs: dict[str, dict[int, int]] = {}
    try:
        for sid in sids:
            rows: dict[int, int] = {}
            start = "-"
            while True:
                page = r.xrange(keys.log(sid), start, "+", count=5000)
                for rid, fields in page:
                    offset = int(rid.split(b"-")[1])
                    rows[offset] = zlib.crc32(frame_for(offset, fields[b"e"]))
                if len(page) < 5000:
                    break
                start = "(" + page[-1][0].decode()
            logs[sid] = rows
    finally:
        r.close()
    return logs


def verdict(lineages: list[dict[str, Any]], logs: dict[str, dict[int, int]]) -> dict[str, Any]:
    """Compare every reading lineage's offsets with its session's log (slow lineages, which
    stop reading on purpose, are left out and summed up separately)."""
    v: dict[str, Any] = dict.fromkeys((
                       "lineages", "affected", "expected_events", "received_events", "lost",
                       "lineages_with_loss", "duplicated", "redelivered_in_resume_window",
                       "out_of_order", "mismatched", "phantom", "unrecovered", "resumed",
                       "not_connected_at_end", "gave_up", "log_trimmed"), 0)
    for lin in lineages:
        if lin["slow"] or lin["start"] < 0:
            continue
        log = logs.get(lin["s"], {})
        got = {int(o): crc for o, crc in lin["got"]}
        expected = {o for o in log if o > lin["start"]}
        lost = expected - got.keys()
        v["lineages"] += 1
        v["affected"] += lin["reconnects"] > 0
        v["expected_events"] += len(expected)
        v["received_events"] += lin["n"]
        v["lost"] += len(lost)
        v["lineages_with_loss"] += bool(lost)
        v["duplicated"] += lin["dups"]
        v["redelivered_in_resume_window"] += lin["redelivered"]
        v["out_of_order"] += lin["order"]
        v["mismatched"] += lin["mismatch"] + sum(1 for o, c in got.items()
                                                  if o in log and log[o] != c)
        v["phantom"] += sum(1 for o in got if o not in log)
        v["unrecovered"] += lin["unrecovered"]
        v["resumed"] += lin["resumed"]
        v["not_connected_at_end"] += not lin["connected"]
        v["gave_up"] += lin["gave_up"]
        v["log_trimmed"] += bool(log) and min(log) > lin["start"] + 1
    slow = [lin for lin in lineages if lin["slow"]]
    if slow:
        outcomes: dict[str, int] = {}
        for lin in slow:
            outcomes[lin["outcome"] or "?"] = outcomes.get(lin["outcome"] or "?", 0) + 1
        v["slow_lineages"] = len(slow)
        v["slow_outcomes"] = dict(sorted(outcomes.items(), key=lambda kv: -kv[1]))
    v["failed_to_open"] = sum(1 for lin in lineages if lin["start"] < 0)
    return v


def sessions_of(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{k}" for k in range(n)]


def edge_counter(metrics_dir: Path, metric: str, labels: dict[str, str]) -> float:
    """A Prometheus counter summed over every process's multi-process file (dead ones too)."""
    from prometheus_client.mmap_dict import MmapedDict

    total = 0.0
    for path in metrics_dir.glob("counter_*.db"):
        with contextlib.suppress(OSError, RuntimeError, ValueError):
            for key, value, *_ in MmapedDict.read_all_values_from_file(  # type: ignore[no-untyped-call]
                    str(path)):
                name, sample, lab, _help = json.loads(key)
                if name == metric and sample == metric + "_total" and lab == labels:
                    total += float(value)
    return total if not math.isnan(total) else 0.0
