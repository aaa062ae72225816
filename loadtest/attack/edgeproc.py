"""One edge process started from a given checkout, measured from outside (/proc)."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


def tree_commit(tree: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(tree), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=5,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class EdgeProc:
    """``agentia gateway`` run with the code of ``tree`` (its directory first on the path)."""

    def __init__(self, tree: Path, env: dict[str, str], log: Path, timeout: float = 30) -> None:
        self.log_path = log
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "launch.cli", "gateway", "--port", "0"], cwd=tree,
            env={**os.environ, **env, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL)
        self.port = self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> int:
        assert self.proc.stdout is not None
        deadline, buf = time.monotonic() + timeout, b""
        while time.monotonic() < deadline and self.proc.poll() is None:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                buf += os.read(self.proc.stdout.fileno(), 4096)
                for line in buf.decode(errors="replace").splitlines():
                    if line.startswith("AGENTIA_EDGE_READY"):
                        info = dict(p.split("=", 1) for p in line.split()[1:])
                        return int(info["port"])
        self.stop()
        raise RuntimeError(f"the edge did not start; see {self.log_path}")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def cpu_s(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime

    def log_lines(self) -> tuple[int, int, int]:
        """(lines, bytes, tracebacks) written to the edge's log so far."""
        data = self.log_path.read_bytes()
        return data.count(b"\n"), len(data), data.count(b"Traceback")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            with contextlib.suppress(OSError):
                self.proc.stdout.close()
        self._log.close()
