"""The peer benchmark's harness: client processes driven over pipes, and a meter of the
server's processes (CPU-seconds from ``/proc/<pid>/stat``, RSS from ``/proc/<pid>/status``)."""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import time
from multiprocessing.connection import Connection
from typing import Any

from loadtest.peer import clientproc
from loadtest.peer.servers import Running
from loadtest.proc_stats import cpu_s, rss_kib


class Clients:
    """The client processes of one server's run, driven over pipes."""

    def __init__(self, run: Running, args: argparse.Namespace) -> None:
        self.procs: list[mp.Process] = []
        self.pipes: list[Connection] = []
        n = args.clients
        for c in range(n):
            spec = {"kind": run.kind, "secret": run.secret, "host": "127.0.0.1",
                    "port": run.port, "heartbeat_s": args.heartbeat, "timeout": 30.0,
                    "inflight": args.inflight,
                    "indices": list(range(c, args.connections, n)),
                    "sources": [f"127.0.0.{2 + (c * 4 + j) % 250}" for j in range(4)]}
            mine, theirs = mp.Pipe()
            proc = mp.Process(target=clientproc.run, args=(spec, theirs), daemon=True)
            proc.start()
            self.procs.append(proc)
            self.pipes.append(mine)

    def gather(self, tag: str, timeout: float) -> list[tuple[Any, ...]]:
        out = []
        deadline = time.monotonic() + timeout
        for pipe, proc in zip(self.pipes, self.procs, strict=True):
            while not pipe.poll(0.5):
                if not proc.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"a client process did not report {tag!r}")
            msg = pipe.recv()
            if msg[0] != tag:
                raise RuntimeError(f"expected {tag!r} from a client, got {msg[0]!r}")
            out.append(msg)
        return out

    def snap(self) -> dict[str, Any]:
        for pipe in self.pipes:
            pipe.send("snap")
        return sum_snaps([m[1] for m in self.gather("snap", 30)])

    def stop(self) -> None:
        for pipe in self.pipes:
            with contextlib.suppress(OSError):
                pipe.send("stop")
        for proc in self.procs:
            proc.join(15)
            if proc.is_alive():
                proc.kill()
                proc.join(5)


def sum_snaps(snaps: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {"errors": {}}
    for s in snaps:
        for k, v in s.items():
            if k == "errors":
                for why, n in v.items():
                    total["errors"][why] = total["errors"].get(why, 0) + n
            else:
                total[k] = total.get(k, 0) + v
    return total


class Meter:
    """CPU-seconds and RSS of the server's processes since the last :meth:`lap`."""

    def __init__(self, run: Running) -> None:
        self.pids = {"server": run.pid, **run.aux}
        self.cpu = {k: cpu_s(p) for k, p in self.pids.items()}

    def lap(self) -> dict[str, float]:
        now = {k: cpu_s(p) for k, p in self.pids.items()}
        used = {k: now[k] - self.cpu[k] for k in now}
        self.cpu = now
        return used

    def rss(self) -> dict[str, int]:
        return {k: rss_kib(p) for k, p in self.pids.items()}
