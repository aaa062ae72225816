"""The Agentia processes a Locust run starts: one ``agentia`` subcommand each (the gateway and
its edge processes, agent workers), stopped by PID.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import IO

from agentia.supervise import spawn, stop_all

ROOT = Path(__file__).resolve().parent.parent.parent


class Agentia:
    """One ``agentia`` subcommand: stdout read until its READY line, then copied to its log
    (and watched for edge restarts), stderr to its log."""

    def __init__(self, args: list[str], env: dict[str, str], ready: str, logfile: Path,
                 timeout: float = 90, cwd: Path = ROOT) -> None:
        self.log: IO[bytes] = logfile.open("ab")
        self.restarts: list[str] = []
        try:
            self.proc, self.info = spawn(args, env, ready, timeout, what=f"'agentia "
                                         f"{' '.join(args)}' (log {logfile})", cwd=cwd,
                                         stderr=self.log, echo=self.log)
        except BaseException:
            self.log.close()
            raise
        self.pids = [int(p) for p in self.info.get("pids", str(self.proc.pid)).split(",")]
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            text = line.decode().strip()
            if text.startswith("AGENTIA_UP_RESTARTED") and "kind=edge" in text:
                new = int(dict(p.split("=", 1) for p in text.split()[1:])["pid"])
                self.restarts.append(text)
                for i, pid in enumerate(self.pids):  # the supervisor restarts in place
                    if not Path(f"/proc/{pid}").exists():
                        self.pids[i] = new
                        break

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (a supervisor drains and stops its edges), then SIGKILL by PID."""
        stop_all([self.proc])
        deadline = time.monotonic() + timeout
        for pid in getattr(self, "pids", []):
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            with contextlib.suppress(ProcessLookupError):
                if Path(f"/proc/{pid}").exists() and _is_agentia(pid):
                    os.kill(pid, signal.SIGKILL)
        self.log.close()


def _is_agentia(pid: int) -> bool:
    try:
        return b"launch.cli" in Path(f"/proc/{pid}/cmdline").read_bytes()  # Edge: -m launch.cli
    except OSError:
        return False
