"""A raw WebSocket client for attack tests: hand-made masked frames over a plain socket.

Unlike a WebSocket library it can send control frames at any rate, send frames the protocol
forbids, and never read what the server writes (a small receive buffer makes the server's
buffers fill fast). Blocking and synchronous on purpose: the edge under test is another process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
import time

import orjson

TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """One client frame (masked, as RFC 6455 requires of clients)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65_536:
        head += bytes([0x80 | 126]) + struct.pack("!H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", n)
    mask = os.urandom(4)
    return head + mask + _mask(payload, mask)


def _mask(payload: bytes, mask: bytes) -> bytes:
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


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
        key = base64.b64encode(os.urandom(16)).decode()
        path = "/v1/ws" + (f"?session={session}" if session else "")
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode())
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError(head.decode("latin-1"))
        accept = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()
        assert f"sec-websocket-accept: {accept}".lower() in head.decode("latin-1").lower()

    # ------------------------------------------------------------ writing

    def send(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        self.sock.sendall(frame(opcode, payload, fin))

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
        b = self.buf
        if len(b) < 2:
            return None
        n, at = b[1] & 0x7F, 2
        if n == 126:
            if len(b) < 4:
                return None
            n, at = struct.unpack("!H", b[2:4])[0], 4
        elif n == 127:
            if len(b) < 10:
                return None
            n, at = struct.unpack("!Q", b[2:10])[0], 10
        if len(b) < at + n:
            return None
        self.buf = b[at + n:]
        return b[0] & 0x0F, b[at:at + n]

    def read_json(self) -> dict[str, object]:
        while True:
            op, payload = self.read_frame()
            if op == CLOSE:
                raise ConnectionError(f"closed {struct.unpack('!H', payload[:2])[0]}")
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
                return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005
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
