"""A raw WebSocket client for attack tests: hand-made masked frames over a plain socket.

Unlike a WebSocket library it can send control frames at any rate, send frames the protocol
forbids, and never read what the server writes (a small receive buffer makes the server's
buffers fill fast). Blocking and synchronous on purpose: the edge under test is another process.
The framing is :mod:`loadtest.wsframe`'s; this is its blocking-socket adapter.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import orjson

from loadtest.wsframe import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    accept,
    close_code,
    frame,
    parse,
    response_head,
    upgrade_key,
    upgrade_request,
)

__all__ = ["BINARY", "CLOSE", "PING", "PONG", "TEXT", "PeakRSS", "RawWS", "frame", "rss_kib"]


class RawWS:
    """One upgraded connection to ``/v1/ws``."""

    def __init__(self, port: int, token: str, session: str | None = None,
                 rcvbuf: int = 4096, timeout: float = 10.0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # set before connect so the window is small from the start
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect(("127.0.0.1", port))
        self.buf = b""
        self._upgrade(port, token, session)

    def _upgrade(self, port: int, token: str, session: str | None) -> None:
        key = upgrade_key()
        path = "/v1/ws" + (f"?session={session}" if session else "")
        self.sock.sendall(upgrade_request(path, key, [
            f"Host: 127.0.0.1:{port}", "Upgrade: websocket", "Connection: Upgrade",
            "Sec-WebSocket-Version: 13", f"Authorization: Bearer {token}"]))
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode("latin-1"))
        assert response_head(head)[1].get("sec-websocket-accept") == accept(key)

    # ------------------------------------------------------------ writing

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.sock.sendall(frame(opcode, payload, fin=fin))

    def send_json(self, **obj: object) -> None:
        self.send(TEXT, orjson.dumps(obj))

    def flood(self, data: bytes, max_bytes: int, max_s: float) -> tuple[bool, int]:
        """Write ``data`` (ready-made frames) over and over without reading, until the server
        drops the connection, ``max_bytes`` were written or ``max_s`` passed.
        Returns (the server dropped us, bytes written)."""
        sent, end = 0, time.monotonic() + max_s
        self.sock.settimeout(0.5)
        while sent < max_bytes and time.monotonic() < end:
            try:
                sent += self.sock.send(data)
            except TimeoutError:
                continue  # our send buffer is full: the server is not reading either
            except OSError:
                return True, sent
        return False, sent

    # ------------------------------------------------------------ reading

    def read_frame(self) -> tuple[int, bytes]:
        """The next server frame (opcode, payload); raises on EOF or a reset."""
        while True:
            got = self._parse()
            if got is not None:
                return got
            chunk = self.sock.recv(65_536)
            if not chunk:
                raise ConnectionError("EOF")
            self.buf += chunk

    def _parse(self) -> tuple[int, bytes] | None:
        got = parse(self.buf, masked_ok=True)
        if got is None:
            return None
        b0, payload, end = got
        self.buf = self.buf[end:]
        return b0 & 0x0F, payload

    def read_json(self) -> dict[str, object]:
        while True:
            op, payload = self.read_frame()
            if op == CLOSE:
                raise ConnectionError(f"closed {close_code(payload)}")
            if op == TEXT:
                obj: dict[str, object] = orjson.loads(payload)
                return obj

    def close_code(self, timeout: float = 10.0) -> int:
        """Read until the server ends the connection: its close code, or 1006 when it reset
        or hung up without a close frame. Raises TimeoutError if it stays open."""
        self.sock.settimeout(timeout)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                op, payload = self.read_frame()
            except (ConnectionError, OSError) as exc:
                if isinstance(exc, TimeoutError):
                    break
                return 1006
            if op == CLOSE:
                return close_code(payload)
        raise TimeoutError("the server kept the connection open")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def rss_kib(pid: int) -> int:
    """Resident memory of a process, from /proc."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class PeakRSS:
    """Samples a process's RSS in a thread while the ``with`` block runs; ``growth`` is the
    peak minus the RSS at the start, in KiB."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.pid, self.every_s = pid, every_s
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(OSError, RuntimeError):
                self.peak = max(self.peak, rss_kib(self.pid))

    def __enter__(self) -> PeakRSS:
        self.start = self.peak = rss_kib(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> int:
        return self.peak - self.start
