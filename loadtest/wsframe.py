"""WebSocket framing for our hand-written clients (RFC 6455), without I/O.

One encoder and one parser for every raw client of the load tools and the tests; each keeps
only its I/O in a thin adapter: asyncio (:mod:`loadtest.attack.wire`,
:mod:`loadtest.peer.wsclient`), gevent (:mod:`loadtest.locust.wsconn`) and blocking
(``tests/rawws.py``). Bytes in, frames out: nothing here reads or writes a socket.
Product code never imports this (it is a client's view of the protocol).
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import struct

CONT, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_MESSAGE = 1 << 20
"""What the load clients accept from a server in one frame or message."""
MAX_HEAD = 16384
"""The longest HTTP response head a client waits for before calling it a bad response."""


class FrameError(ValueError):
    """The server broke the framing rules; ``code`` is the close code a client would send."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def apply_mask(data: bytes, key: bytes) -> bytes:
    """``data`` XORed with the 4-byte ``key`` repeated (masking and unmasking alike)."""
    n = len(data)
    if not n:
        return b""
    stream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream, "big")).to_bytes(n, "big")


def frame(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0,
          mask: bool = True, length: int | None = None) -> bytes:
    """One client frame, masked with a random key as RFC 6455 requires (``mask=False`` to
    break the rule). ``rsv`` is the 3 RSV bits (0-7); ``length`` overrides the declared
    payload length (to announce more than is sent)."""
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (opcode & 0xF)
    m = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, m | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", b0, m | 126, n)
    else:
        head = struct.pack("!BBQ", b0, m | 127, n)
    if not mask:
        return head + payload
    key = random.randbytes(4)  # a mask hides nothing from the server: no need for urandom
    return head + key + apply_mask(payload, key)


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def close_code(payload: bytes) -> int:
    """The code of a close frame's payload; 1005 (none given) when it is shorter than 2."""
    return int(struct.unpack("!H", payload[:2])[0]) if len(payload) >= 2 else 1005


def parse(buf: bytes, pos: int = 0, *, limit: int | None = None,
          masked_ok: bool = False) -> tuple[int, bytes, int] | None:
    """The frame at ``buf[pos:]``: (its first byte, its payload, where it ends), or None while
    it is incomplete. A masked frame is unmasked when ``masked_ok``, else a FrameError (1002),
    as is a payload over ``limit`` (1009)."""
    n = len(buf) - pos
    if n < 2:
        return None
    b0, b1 = buf[pos], buf[pos + 1]
    if b1 & 0x80 and not masked_ok:
        raise FrameError("masked server frame", 1002)
    size, head = b1 & 0x7F, 2
    if size == 126:
        if n < 4:
            return None
        size, head = struct.unpack_from("!H", buf, pos + 2)[0], 4
    elif size == 127:
        if n < 10:
            return None
        size, head = struct.unpack_from("!Q", buf, pos + 2)[0], 10
    if limit is not None and size > limit:
        raise FrameError("message too big", 1009)
    key = b""
    if b1 & 0x80:
        key, head = buf[pos + head:pos + head + 4], head + 4
    end = pos + head + size
    if len(buf) < end:
        return None
    payload = buf[pos + head:end]
    return b0, apply_mask(payload, key) if key else payload, end


class Messages:
    """Reassembles fragmented data messages: :meth:`add` takes each frame in order and returns
    a control frame or a complete message as (opcode, payload), None while one is pending."""

    __slots__ = ("frag", "frag_op")

    def __init__(self) -> None:
        self.frag: list[bytes] | None = None
        self.frag_op = 0

    def add(self, b0: int, payload: bytes) -> tuple[int, bytes] | None:
        fin, op = b0 & 0x80, b0 & 0x0F
        if op >= 0x8:
            return op, payload
        if op == CONT:
            if self.frag is None:
                raise FrameError("unexpected continuation", 1002)
            self.frag.append(payload)
            if not fin:
                return None
            frag, self.frag = self.frag, None
            return self.frag_op, b"".join(frag)
        if fin:
            return op, payload
        self.frag, self.frag_op = [payload], op
        return None


def upgrade_key() -> bytes:
    """A fresh ``Sec-WebSocket-Key``."""
    return base64.b64encode(os.urandom(16))


def accept(key: bytes) -> str:
    """The ``Sec-WebSocket-Accept`` a server must answer to ``key``."""
    return base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()


def upgrade_request(path: str, key: bytes, headers: list[str]) -> bytes:
    """The HTTP/1.1 Upgrade request: ``headers`` (``Host`` first) and the key's header."""
    lines = [f"GET {path} HTTP/1.1", *headers, f"Sec-WebSocket-Key: {key.decode()}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def response_head(head: bytes) -> tuple[int | None, dict[str, str]]:
    """A response head (up to the blank line, excluded): its status (None when unparsable)
    and its headers, names in lower case."""
    lines = head.decode("latin-1").split("\r\n")
    status = lines[0].split(" ", 2)
    code = int(status[1]) if len(status) >= 2 and status[1].isdigit() else None
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return code, headers
