"""One edge process started from a given checkout, measured from outside (/proc)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from agentia.supervise import spawn

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
        try:
            self.proc, info = spawn(
                ["gateway", "--port", "0"],
                {**os.environ, **env, "PYTHONPATH": str(tree), "PYTHONUNBUFFERED": "1"},
                "AGENTIA_EDGE_READY", timeout, what=f"the edge of {tree} (log {log})",
                cwd=tree, stderr=self._log)
        except BaseException:
            self._log.close()
            raise
        self.port = int(info["port"])

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
