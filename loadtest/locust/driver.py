"""Drives a stream scenario (reconnect, slow) from the runner while Locust runs: waits for the
ramp, starts the publisher, kills an edge process or turns the slow readers on, stops the
publisher, has every Locust process report its lineages, and judges them against Redis before
the run ends. Every wait has a deadline; the phase file ends at ``stop`` whatever happens.
Also the stream scenarios' option helpers and the network namespace they may run in."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from loadtest.locust.streams import (
    Publisher,
    counters,
    edge_counter,
    read_lineages,
    session_logs,
    sessions_of,
    set_phase,
    verdict,
    wait_for,
)

ROOT = Path(__file__).resolve().parents[2]
EDGE_CLOSE_S = 11.0


class Driver(threading.Thread):
    def __init__(self, a: argparse.Namespace, out: Path, target: int, processes: int,
                 edge_pids: list[int], redis_url: str, metrics_dir: Path,
                 conns_of: Callable[[int], float]) -> None:
        super().__init__(daemon=True)
        self.a, self.out, self.target, self.processes = a, out, target, processes
        self.edge_pids, self.redis_url, self.metrics_dir = edge_pids, redis_url, metrics_dir
        self.conns_of = conns_of
        self.prefix = os.environ.get("AGENTIA_REDIS_PREFIX", "agentia")
        self.result: dict[str, Any] = {}
        self.aborted = threading.Event()  # Locust ended first: stop waiting

    def _wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        return wait_for(lambda: self.aborted.is_set() or pred(), timeout) and not (
            self.aborted.is_set() and not pred())

    def _sleep(self, seconds: float) -> None:
        self.aborted.wait(max(0.0, seconds))

    def run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # the run must still end; the summary says what broke
            self.result["driver_error"] = repr(exc)
        finally:
            if self.aborted.is_set():
                self.result["locust_ended_first"] = True
            self.result["t_stop"] = set_phase(self.out, "stop")

    def _run(self) -> None:
        a, r = self.a, self.result
        ramp_timeout = 3 * self.target / a.rate + 30

        def ramped() -> bool:
            c = counters(self.out)
            return c.get("opened", 0) + c.get("failed", 0) >= self.target

        r["ramp_complete"] = self._wait(ramped, ramp_timeout)
        r["t_ramped"] = round(time.time(), 3)
        self._sleep(2.0)  # the last welcomes and the edges' gauges settle
        pub = Publisher(self.redis_url, self.prefix, sessions_of(a.session_prefix, a.sessions),
                        a.event_rate, a.event_bytes)
        pub.start()
        r["t_steady"] = set_phase(self.out, "steady")
        try:
            if a.scenario == "reconnect":
                self._kill()
            else:
                self._slow()
        finally:
            r["publisher"] = pub.stop()
        r["t_settle"] = set_phase(self.out, "settle")
        self._sleep(a.settle)
        r["slow_closes_edge"] = edge_counter(self.metrics_dir, "agentia_closes",
                                             {"reason": "slow"})
        if a.scenario == "slow":
            # a connection closed as SLOW keeps its socket up to EDGE_CLOSE_S more (its
            # writer, then its close frame, each get 5 s before the edge aborts it): wait
            # until the edges' gauges have let go of them, so clients see how they ended
            left = self.target - r["slow_closes_edge"]
            self._wait(lambda: sum(self.conns_of(p) for p in self.edge_pids) <= left,
                       EDGE_CLOSE_S)
        r["t_report"] = set_phase(self.out, "report")
        self._wait(lambda: len(list(self.out.glob("lineages-*.jsonl"))) >= self.processes, 60)
        lineages = read_lineages(self.out)
        logs = session_logs(self.redis_url, self.prefix, {lin["s"] for lin in lineages})
        r["verdict"] = verdict(lineages, logs)
        r["verdict"]["lineages_reported"] = len(lineages)

    def _kill(self) -> None:
        a, r = self.a, self.result
        self._sleep(a.kill_after)
        i = a.kill_edge % len(self.edge_pids)
        pid = self.edge_pids[i]
        before = counters(self.out)
        r["killed"] = {"edge": i, "pid": pid, "connections": self.conns_of(pid),
                       "open_client_side_before": before.get("open")}
        if b"launch.cli" not in Path(f"/proc/{pid}/cmdline").read_bytes():  # run.py: -m launch.cli
            raise RuntimeError(f"edge pid {pid} is not an agentia process any more")
        os.kill(pid, signal.SIGKILL)
        t_kill = r["t_kill"] = round(time.time(), 3)
        open_before = before.get("open", 0)

        def back() -> bool:
            c = counters(self.out)
            return c.get("timestamp", 0) > t_kill + 1 and c.get("open", 0) >= open_before

        if self._wait(back, a.after_kill):
            r["all_reconnected_after_s"] = round(counters(self.out)["timestamp"] - t_kill, 1)
        self._sleep(t_kill + a.after_kill - time.time())
        after = counters(self.out)
        r["dropped_client_side"] = after.get("dropped", 0) - before.get("dropped", 0)

    def _slow(self) -> None:
        a, r = self.a, self.result
        self._sleep(a.before)
        r["t_slow"] = set_phase(self.out, "slow")
        self._sleep(a.slow_seconds)


def stream_seconds(a: argparse.Namespace) -> float:
    """The longest a stream scenario's phases after the ramp can take."""
    middle = a.kill_after + a.after_kill if a.scenario == "reconnect" else (
        a.before + a.slow_seconds)
    return float(2 + middle + a.settle + 60)


def stream_meta(a: argparse.Namespace) -> dict[str, Any]:
    keys = ["sessions", "event_rate", "event_bytes", "jitter", "settle", "session_prefix"]
    keys += (["kill_after", "after_kill", "kill_edge"] if a.scenario == "reconnect" else
             ["slow_fraction", "slow_rcvbuf", "before", "slow_seconds", "netns_wmem"])
    return {k: getattr(a, k) for k in keys}


def in_netns(a: argparse.Namespace, argv: list[str]) -> int:
    """Run this same command in a new network namespace (``unshare --net``, root only) whose
    loopback caps TCP send buffers at ``--netns-wmem`` bytes (``net.ipv4.tcp_wmem`` is per
    namespace): on the host's loopback an edge socket's send buffer autotunes up to
    ``tcp_wmem``'s maximum (4 MiB here), so a client that stops reading is noticed only after
    MiBs. The host's settings are untouched; everything the run starts lives and dies inside."""
    script = (f'ip link set lo up && sysctl -qw net.ipv4.tcp_wmem="4096 16384 {a.netns_wmem}" '
              '&& exec "$@"')
    env = {**os.environ, "AGENTIA_LOAD_IN_NETNS": str(a.netns_wmem)}
    cmd = ["unshare", "--net", "sh", "-c", script, "sh", sys.executable, "-m",
           "loadtest.locust.run", *argv]
    try:
        return subprocess.call(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise SystemExit(f"--netns-wmem needs unshare(1) and root: {exc}") from None
