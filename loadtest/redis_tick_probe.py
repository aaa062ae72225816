"""What a worker's tick costs redis-server, seen from inside during a turn-path run (issue 13,
session 19): attach to the redis-server of a running ``loadtest.bench_turnpath`` (a child of
its PID) once its load has started, and take over ``--seconds``: commands a second by name and
their time (INFO commandstats), socket reads and replies a second (INFO stats), its CPU, and
its system calls counted by ``perf stat`` (``epoll_wait``: event-loop iterations, Redis 7.0 has
no counter of its own; ``read``/``write``/``writev``: socket reads, replies and AOF writes;
``fdatasync``: the AOF's fsync); then half a second of ``SLOWLOG`` at 0 (every command with its
arguments and µs: one tick command by command). Run under the bench lock, for example:

    python -m loadtest.bench_turnpath --tree /work/wt/base19 --profiles long --sessions 40 \\
        --seconds 30 --rounds 1 &
    python -m loadtest.redis_tick_probe --bench-pid $! --seconds 8 --record redis19-tick-probe
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from typing import Any

import redis

from loadtest.record import record


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                status = open(f"/proc/{d}/status").read()  # noqa: SIM115
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                out.append(int(d))
    return out


def _port(cmdline: str) -> int:
    parts = cmdline.split("\0")
    if "--port" in parts:
        return int(parts[parts.index("--port") + 1])
    return int(parts[0].split()[-1].rsplit(":", 1)[1])  # "redis-server 127.0.0.1:PORT"


def _loaded(bench: int, wait_s: float) -> tuple[int, redis.Redis]:
    """The bench's redis-server once it serves > 300 commands a second (the load)."""
    until = time.time() + wait_s
    while time.time() < until:
        for pid in _children(bench):
            try:
                cmd = open(f"/proc/{pid}/cmdline").read()  # noqa: SIM115
            except OSError:
                continue
            if "redis-server" not in cmd:
                continue
            r = redis.Redis(port=_port(cmd))
            try:
                c0 = int(r.info("stats")["total_commands_processed"])
                time.sleep(0.5)
                if int(r.info("stats")["total_commands_processed"]) - c0 > 150:
                    return pid, r
            except redis.RedisError:
                continue
        time.sleep(1)
    raise SystemExit("no loaded redis-server found")


def _snap(r: redis.Redis) -> tuple[dict[str, Any], dict[str, Any], float, float]:
    cpu = r.info("cpu")
    return (r.info("commandstats"), r.info("stats"),
            float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]), time.perf_counter())


SYSCALLS = ("epoll_wait", "read", "write", "writev", "fdatasync")


def probe(pid: int, r: redis.Redis, seconds: float) -> dict[str, Any]:
    s0 = _snap(r)
    events = ",".join(f"syscalls:sys_enter_{c}" for c in SYSCALLS) + ",context-switches"
    perf = subprocess.run(["perf", "stat", "-x,", "-e", events, "-p", str(pid), "--", "sleep",
                           str(seconds)], capture_output=True, text=True, check=False)
    s1 = _snap(r)
    dt = s1[3] - s0[3]
    calls = {k: int(v["calls"]) - int(s0[0].get(k, {"calls": 0})["calls"])
             for k, v in s1[0].items()}
    usec = {k: int(v["usec"]) - int(s0[0].get(k, {"usec": 0})["usec"]) for k, v in s1[0].items()}
    io = {k: int(s1[1][k]) - int(s0[1][k]) for k in (
        "total_reads_processed", "total_writes_processed", "total_commands_processed")}
    counts = {}
    for line in perf.stderr.splitlines():
        f = line.split(",")
        if len(f) > 2 and f[0].isdigit():
            counts[f[2].removeprefix("syscalls:sys_enter_")] = round(int(f[0]) / dt, 1)
    out: dict[str, Any] = {
        "seconds": round(dt, 2), "cpu_ms_per_s": round((s1[2] - s0[2]) / dt * 1e3, 2),
        "calls_per_s": {k.removeprefix("cmdstat_"): round(v / dt, 1)
                        for k, v in sorted(calls.items(), key=lambda x: -x[1]) if v},
        "usec_per_s": {k.removeprefix("cmdstat_"): round(v / dt, 1)
                       for k, v in sorted(usec.items(), key=lambda x: -x[1]) if v},
        "io_per_s": {k: round(v / dt, 1) for k, v in io.items()},
        "syscalls_per_s": counts}
    old = r.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    r.config_set("slowlog-max-len", 20000)
    r.slowlog_reset()
    r.config_set("slowlog-log-slower-than", 0)
    time.sleep(0.5)
    r.config_set("slowlog-log-slower-than", old)
    out["slowlog"] = [{"t": e["start_time"], "us": e["duration"],
                       "client": str(e.get("client_address", "")),
                       "cmd": (e["command"].decode(errors="replace")
                               if isinstance(e["command"], bytes) else str(e["command"]))[:120]}
                      for e in r.slowlog_get(20000)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bench-pid", type=int, required=True)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--wait", type=float, default=240.0, help="for the load to start, s")
    ap.add_argument("--record", metavar="NAME")
    a = ap.parse_args()
    if not 0 < a.seconds <= 30:
        ap.error("--seconds 0-30")
    pid, r = _loaded(a.bench_pid, a.wait)
    time.sleep(1)
    out = probe(pid, r, a.seconds)
    print({k: v for k, v in out.items() if k != "slowlog"})
    if a.record:
        print("recorded", record(a.record, out))


if __name__ == "__main__":
    main()
