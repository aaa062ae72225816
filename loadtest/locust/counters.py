"""The suite's options, counters and per-second timelines, and Locust's process tweaks.

Counters (open, opened, failed, dropped, turns) travel to the master with Locust's worker
reports; the master (or a standalone process) writes them every second to
``<csv prefix>_agentia.csv`` and, on quitting, every request name's response-time histogram to
``<csv prefix>_response_times.json``. The locustfiles' load shapes read the same counters.
Importing this module registers its Locust event listeners (the Users' modules import it).
"""

from __future__ import annotations

import csv
import gc
import logging
import os
import time
from typing import Any

import gevent
import locust.runners
import orjson
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from locust.stats import StatsCSVFileWriter

# Workers report to the master every second instead of every 3 s: the shapes react to the
# connection counters and the connections-over-time plot has one point a second.
locust.runners.WORKER_REPORT_INTERVAL = 1.0
# A worker whose hub is busy (thousands of events a second on a loaded machine) may miss a few
# heartbeats; with Locust's default (3 s) the master drops it and ends the run midway.
locust.runners.HEARTBEAT_LIVENESS = 15


def _stats_writer_until_closed(self: StatsCSVFileWriter) -> None:
    """Locust 2.47 closes the CSV files at shutdown (locustio/locust#3486) without stopping
    the greenlet that rewrites them every second; when it wakes in between it dies with
    "I/O operation on closed file" and a traceback in the log. Stop it quietly instead."""
    try:
        _stats_writer(self)
    except ValueError:
        if not self.requests_csv_filehandle.closed:
            raise


_stats_writer = StatsCSVFileWriter.stats_writer
StatsCSVFileWriter.stats_writer = _stats_writer_until_closed  # type: ignore[method-assign]

# ------------------------------------------------------------------ options and counters


@events.init_command_line_parser.add_listener
def _options(parser: Any, **_: Any) -> None:
    def opt(name: str, env: str, **kw: Any) -> None:
        parser.add_argument(name, env_var=f"AGENTIA_LOAD_{env}", include_in_web_ui=False, **kw)

    opt("--ws-path", "PATH", default="/v1/ws", help="WebSocket path (may carry a query)")
    opt("--ws-token", "TOKEN", default=os.environ.get("AGENTIA_TOKEN", ""),
        help="one token for every connection (default: mint one user per connection)")
    opt("--ws-token-in", "TOKEN_IN", default="header",
        choices=["header", "query", "subprotocol"], help="where the token goes")
    opt("--ws-ttl", "TTL", type=int, default=4 * 3600, help="lifetime of minted tokens, s")
    opt("--ws-sources", "SOURCES", default="4",
        help="source addresses: a count per Locust process (127.0.0.x picked by worker "
             "index) or a comma-separated list")
    opt("--ws-timeout", "TIMEOUT", type=float, default=15.0, help="handshake timeout, s")
    opt("--ws-heartbeat", "HEARTBEAT", type=float, default=20.0, help="ping interval, s")
    opt("--ws-connections", "CONNECTIONS", type=int, default=1000,
        help="storm: connections to open in all")
    opt("--ws-batch", "BATCH", type=int, default=500, help="storm: connections per HoldUser")
    opt("--ws-open-rate", "OPEN_RATE", type=float, default=1000.0,
        help="storm: handshakes started per second, over all HoldUsers")
    opt("--ws-inflight", "INFLIGHT", type=int, default=50,
        help="storm: handshakes in flight per HoldUser at most")
    opt("--ws-hold", "HOLD", type=float, default=60.0,
        help="storm: seconds to hold once every handshake is done")
    opt("--ws-ramp-timeout", "RAMP_TIMEOUT", type=float, default=0.0,
        help="storm: give up waiting for the ramp after this many s (0: 3x the planned ramp "
             "+ 30 s)")
    opt("--ws-chat-users", "CHAT_USERS", type=int, default=20, help="chat: connections")
    opt("--ws-turn-rate", "TURN_RATE", type=float, default=5.0,
        help="chat: turns per second over all ChatUsers")
    opt("--ws-turns", "TURNS", type=int, default=0,
        help="chat: turns in all (0: until --ws-seconds)")
    opt("--ws-seconds", "SECONDS", type=float, default=30.0,
        help="chat: stop sending new turns after this many seconds")
    opt("--ws-turn-timeout", "TURN_TIMEOUT", type=float, default=30.0,
        help="chat: seconds to wait for a turn's reply")
    opt("--ws-text", "TEXT", default="hello there", help="chat: the turn's text")


class Tally:
    """Counters of this process; the master sums the workers' copies."""

    open = opened = failed = dropped = 0
    turns_started = turns_done = turns_failed = 0
    started_at = 0.0

    @classmethod
    def snapshot(cls) -> dict[str, int]:
        return {"open": cls.open, "opened": cls.opened, "failed": cls.failed,
                "dropped": cls.dropped, "turns_started": cls.turns_started,
                "turns_done": cls.turns_done, "turns_failed": cls.turns_failed}


_remote: dict[str, dict[str, int]] = {}
# (name, unix second) -> {rounded ms: count}: what Locust's own history cannot give, exact
# percentiles and rates per second. Workers ship theirs to the master with each report.
_timeline: dict[tuple[str, int], dict[float, int]] = {}


def _round_ms(ms: float) -> float:
    if ms < 10:
        return round(ms, 1)
    if ms < 100:
        return float(round(ms))
    return float(round(ms, -1) if ms < 1000 else round(ms, -2))


def record(name: str, ms: float, ok: bool) -> None:
    key = (name if ok else f"{name} failed", int(time.time()))
    bucket = _timeline.setdefault(key, {})
    r = _round_ms(ms)
    bucket[r] = bucket.get(r, 0) + 1


@events.report_to_master.add_listener
def _report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    data["agentia"] = Tally.snapshot()
    data["agentia_timeline"] = [[name, sec, [[ms, n] for ms, n in h.items()]]
                                for (name, sec), h in _timeline.items()]
    _timeline.clear()


@events.worker_report.add_listener
def _worker_report(client_id: str, data: dict[str, Any], **_: Any) -> None:
    if "agentia" in data:
        _remote[client_id] = data["agentia"]
    for name, sec, pairs in data.get("agentia_timeline", ()):
        bucket = _timeline.setdefault((name, int(sec)), {})
        for ms, n in pairs:
            bucket[ms] = bucket.get(ms, 0) + n


def totals(environment: Environment) -> dict[str, int]:
    """The counters over all processes (on the master) or of this process (standalone)."""
    if isinstance(environment.runner, MasterRunner):
        out = dict.fromkeys(Tally.snapshot(), 0)
        for snap in _remote.values():
            for k, v in snap.items():
                out[k] = out.get(k, 0) + v
        return out
    return Tally.snapshot()


def _csv_prefix(environment: Environment) -> str | None:
    opts = environment.parsed_options
    return getattr(opts, "csv_prefix", None) if opts is not None else None


@events.init.add_listener
def _on_init(environment: Environment, **_: Any) -> None:
    if isinstance(environment.runner, WorkerRunner) or not _csv_prefix(environment):
        return
    prefix = _csv_prefix(environment)

    def writer() -> None:
        with open(f"{prefix}_agentia.csv", "w", newline="") as f:
            w = csv.writer(f)
            keys = list(Tally.snapshot())
            w.writerow(["timestamp", "users", *keys])
            while True:
                runner = environment.runner
                users = runner.user_count if runner is not None else 0
                t = totals(environment)
                w.writerow([f"{time.time():.3f}", users, *(t[k] for k in keys)])
                f.flush()
                gevent.sleep(1.0)

    gevent.spawn(writer)


class GCPauses:
    """Full (generation 2) garbage collections in this process: a load generator's own pauses
    would show up as latency it attributes to the server, so they are logged at the end."""

    count = 0
    total_ms = max_ms = 0.0
    _t0 = 0.0

    @classmethod
    def callback(cls, phase: str, info: dict[str, int]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            cls._t0 = time.perf_counter()
        else:
            ms = (time.perf_counter() - cls._t0) * 1000
            cls.count += 1
            cls.total_ms += ms
            cls.max_ms = max(cls.max_ms, ms)


gc.callbacks.append(GCPauses.callback)


@events.quitting.add_listener
def _on_quitting(environment: Environment, **_: Any) -> None:
    logging.getLogger("agentia.load").info(
        "pid %d: %d full GC pauses, max %.1f ms, total %.1f ms", os.getpid(), GCPauses.count,
        GCPauses.max_ms, GCPauses.total_ms)
    prefix = _csv_prefix(environment)
    if isinstance(environment.runner, WorkerRunner) or not prefix:
        return
    hist = {f"{e.method} {e.name}": {str(k): v for k, v in sorted(e.response_times.items())}
            for e in environment.stats.entries.values()}
    timeline: dict[str, dict[str, dict[str, int]]] = {}
    for (name, sec), h in sorted(_timeline.items()):
        timeline.setdefault(name, {})[str(sec)] = {str(ms): n for ms, n in sorted(h.items())}
    with open(f"{prefix}_response_times.json", "wb") as f:
        f.write(orjson.dumps({"response_times_ms": hist, "counters": totals(environment),
                              "per_second": timeline}))
