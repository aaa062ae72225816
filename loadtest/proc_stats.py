"""What the benches read of a process and of the machine (RSS, CPU time, kernel slab, the
machine's idle share), the percentile they all take, and how they start ``agentia`` commands
of a checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from agentia import supervise

NO_USER_LIMITS = {"AGENTIA_MAX_CONNECTIONS_PER_USER_TOTAL": "0",
                  "AGENTIA_MAX_SESSIONS_PER_HOUR": "0", "AGENTIA_MAX_SESSIONS_PER_USER": "0"}
"""A benchmark's few users hold many connections and sessions: the per-user limits over the
deployment (sessions/opening.py) are off, as the per-process one is raised."""

IP_BIND_ADDRESS_NO_PORT = 24
ROOT = Path(__file__).resolve().parent.parent


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def slab_kib() -> int:
    """Kernel slab memory, machine-wide (sockets, their buffers, epoll entries...)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("Slab:"):
            return int(line.split()[1])
    return 0


def machine_ticks() -> tuple[int, int]:
    """(busy, idle) clock ticks of the whole machine so far (/proc/stat; idle includes
    iowait): a shared machine's idle share tells how much its figures can be trusted."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, idle


def idle_share(t0: tuple[int, int], t1: tuple[int, int]) -> float | None:
    """The machine's idle share between two :func:`machine_ticks` readings (None: no tick)."""
    (busy0, idle0), (busy1, idle1) = t0, t1
    ticks = busy1 - busy0 + idle1 - idle0
    return round((idle1 - idle0) / ticks, 4) if ticks else None


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def spawn(args: list[str], env: dict[str, str], ready: str | tuple[str, ...],
          tree: Path = ROOT) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """``agentia <args>`` of the checkout ``tree`` (its directory first on the path): the
    command module is ``launch.cli``, or ``agentia.cli`` in checkouts older than issue 12."""
    if tree == ROOT:
        return supervise.spawn(args, env, ready, 120, cwd=ROOT, stderr=subprocess.DEVNULL)
    module = "launch.cli" if (tree / "launch" / "cli.py").exists() else "agentia.cli"
    return supervise.start([sys.executable, "-m", module, *args],
                           {**env, "PYTHONPATH": str(tree)}, ready, 120, cwd=tree,
                           stderr=subprocess.DEVNULL, what=f"the edge of {tree}")

