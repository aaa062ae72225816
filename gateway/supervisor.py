"""``agentia gateway --processes N``: N edge processes sharing one port (SO_REUSEPORT).

One process holds at most ~19,000 connections (the fd limit), so a box serves more by running
more processes on the same port; the kernel spreads new connections over them. The supervisor
holds the port (a bound, non-listening SO_REUSEPORT socket, so ``--port 0`` can pick one),
restarts a process that dies, and on SIGTERM/SIGINT lets every process drain (close 1012).
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile

from agentia.ports import busy_line, reason
from agentia.supervise import (
    Child,
    StartError,
    Stopped,
    say,
    stop_all,
    stop_signals,
    supervise,
)


def reserve_port(host: str, port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run(host: str, port: int, processes: int, drain_s: float) -> None:
    stopping = stop_signals()
    try:
        holder = reserve_port(host, port)
    except OSError as exc:
        say(busy_line("agentia gateway", "edge WebSocket", host, port, reason(exc), "--port"),
            sys.stderr)
        raise SystemExit(1) from None
    port = holder.getsockname()[1]
    env = {**os.environ, "AGENTIA_REUSE_PORT": "true"}
    metrics_dir = None
    if not env.get("PROMETHEUS_MULTIPROC_DIR"):  # so /metrics on the port sums all processes
        metrics_dir = tempfile.mkdtemp(prefix="agentia-metrics-")
        env["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    children: list[Child] = []
    try:
        for _ in range(processes):
            children.append(Child("edge", ["gateway", "--host", host, "--port", str(port)],
                                  env, "AGENTIA_EDGE_READY", stopping=stopping))
        pids = ",".join(str(c.proc.pid) for c in children)
        say(f"AGENTIA_GATEWAY_READY port={port} pids={pids}")
        supervise(children, stopping)
    except Stopped:
        pass
    except StartError as exc:
        say(f"agentia gateway: {exc}", sys.stderr)
        raise SystemExit(1) from None
    finally:
        stop_all([c.proc for c in children], drain_s + 5)
        holder.close()
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
