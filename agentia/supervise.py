"""Child processes that are restarted when they die: used by ``agentia up`` and by
``agentia gateway --processes N``. Children are ``agentia`` subcommands that print one READY
line (``AGENTIA_<KIND>_READY key=value ...``) on stdout once they serve."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from types import FrameType

from agentia import metrics


def spawn(args: list[str], env: dict[str, str], ready: str,
           timeout: float = 60) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    proc = subprocess.Popen([sys.executable, "-m", "agentia.cli", *args], env=env,
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # Ctrl-C reaches us; we stop them in order
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        text = line.decode().strip()
        if text.startswith(ready):
            return proc, dict(p.split("=", 1) for p in text.split()[1:])
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError(f"'agentia {' '.join(args)}' did not start; see its log above")


def stop_signals() -> Callable[[], bool]:
    """Catch SIGTERM and SIGINT; the returned function says whether one has arrived."""
    caught: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    return lambda: bool(caught)


def stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float = 15.0) -> None:
    """SIGTERM every process, wait ``grace_s`` (their drain), then kill what is left."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


class Child:
    """One supervised child: restarted with the same arguments (an edge keeps its port) when
    it dies, at most ``MAX_RESTARTS`` times a minute."""

    MAX_RESTARTS = 5

    def __init__(self, kind: str, args: list[str], env: dict[str, str], ready: str,
                 timeout: float = 60) -> None:
        self.kind, self.args, self.env, self.ready = kind, args, env, ready
        self.timeout = timeout
        self.restarts: list[float] = []
        self.proc, self.info = spawn(args, env, ready, timeout)

    def revive(self) -> bool:
        now = time.monotonic()
        self.restarts = [t for t in self.restarts if now - t < 60] + [now]
        if len(self.restarts) > self.MAX_RESTARTS:
            return False
        metrics.process_exited(self.proc.pid, self.env.get("PROMETHEUS_MULTIPROC_DIR"))
        self.proc, self.info = spawn(self.args, self.env, self.ready, self.timeout)
        print(f"AGENTIA_UP_RESTARTED kind={self.kind} pid={self.proc.pid} "
              f"port={self.info.get('port', '')}", flush=True)
        return True


def supervise(children: list[Child], stopping: Callable[[], bool]) -> None:
    while not stopping():
        for c in children:
            if c.proc.poll() is not None and not stopping():
                print(f"{c.kind} (pid {c.proc.pid}) exited with {c.proc.returncode}; "
                      "restarting it", file=sys.stderr, flush=True)
                if not c.revive():
                    print(f"{c.kind} keeps dying; stopping everything", file=sys.stderr)
                    return
        time.sleep(0.2)


