"""HTTP/1.1 responses as bytes in, head and body out: the loop-free part of
:mod:`sessions.model_http` (the lean model's HTTP client).

:class:`ResponseReader` takes whatever one socket read held and gives back the body bytes it
carried, with the chunked transfer encoding taken off in bulk (bytes methods, a Python step
per HTTP chunk, nothing per byte): a streamed Chat Completions reply is one HTTP chunk per
token, and httpcore/h11 made each of them an event and a read of its own. Only what a client
of an OpenAI-compatible API meets is covered: a status line and headers, interim 1xx heads
skipped, bodies framed by ``Transfer-Encoding: chunked``, ``Content-Length``, or the end of the
connection. Anything else is a :class:`WireError` (the transport's ``RemoteProtocolError``).
"""

from __future__ import annotations

MAX_HEAD = 64 * 1024
"""Bytes a response head (status line and headers) may take."""
MAX_CHUNK_LINE = 4 * 1024
"""Bytes a chunk-size line (with its extensions) or a trailer line may take."""
_NO_BODY = frozenset({204, 304})
_HEX = b"0123456789abcdefABCDEF"


class WireError(Exception):
    """The server broke HTTP/1.1 framing (or closed before the end of a message)."""


def request_head(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A request's head: request line, headers as given, blank line."""
    lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), target)]
    lines += [b"%s: %s" % (name, value) for name, value in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


class ResponseReader:
    """One response's head and body from the bytes of a connection (:meth:`feed`, then
    :meth:`feed_eof` if the peer closes). ``status`` is 0 until the head is complete."""

    __slots__ = ("_buf", "_head_only", "_left", "_mode", "_trailer", "complete", "headers",
                 "keep_alive", "reason", "status")

    def __init__(self, head_only: bool = False) -> None:
        self._head_only = head_only  # the answer to HEAD: no body whatever the headers say
        self._buf = b""
        self._mode = "head"  # head, length, chunk-size, chunk-data, chunk-crlf, trailer, close
        self._left = 0
        self._trailer = False
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.keep_alive = True
        self.complete = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes ``data`` (with what came before it) completes."""
        if self.complete:
            if data:  # bytes after the end of the message: the connection is not reusable
                self.keep_alive = False
            return b""
        if self._buf:
            data, self._buf = self._buf + data, b""
        if self._mode == "head":
            data = self._head(data)
            if self._mode == "head":
                return b""
        if self._mode == "length":
            return self._length(data)
        if self._mode == "close":
            return data
        return self._chunked(data)

    def feed_eof(self) -> None:
        """The peer closed the connection: the end of a body framed by it, else an error."""
        self.keep_alive = False
        if self._mode == "close":
            self.complete = True
        elif not self.complete:
            raise WireError("the server closed the connection before the end of the response")

    def _head(self, data: bytes) -> bytes:
        while self._mode == "head":
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_HEAD:
                    raise WireError("the response head is too large")
                self._buf = data
                return b""
            self._parse_head(data[:end])
            data = data[end + 4:]
        return data

    def _parse_head(self, head: bytes) -> None:
        if len(head) > MAX_HEAD:
            raise WireError("the response head is too large")
        status_line, *lines = head.split(b"\r\n")
        parts = status_line.split(b" ", 2)
        if len(parts) < 2 or parts[0] not in (b"HTTP/1.1", b"HTTP/1.0") \
                or not parts[1].isdigit() or len(parts[1]) != 3:
            raise WireError(f"not an HTTP/1.1 status line: {status_line[:80]!r}")
        status = int(parts[1])
        if 100 <= status < 200:  # interim (100 Continue, 103 Early Hints): the real one follows
            return
        headers = []
        for line in lines:
            name, colon, value = line.partition(b":")
            if not colon or not name or name != name.strip() or line[:1] in b" \t":
                raise WireError(f"a malformed header line: {line[:80]!r}")
            headers.append((name, value.strip(b" \t")))
        self.status, self.reason = status, parts[2] if len(parts) > 2 else b""
        self.headers = headers
        self.keep_alive = parts[0] == b"HTTP/1.1"
        self._framing(headers)

    def _framing(self, headers: list[tuple[bytes, bytes]]) -> None:
        lengths: set[bytes] = set()
        codings: list[bytes] = []
        for name, value in headers:
            lower = name.lower()
            if lower == b"content-length":
                lengths.update(v.strip() for v in value.split(b","))
            elif lower == b"transfer-encoding":
                codings += [c.strip().lower() for c in value.split(b",")]
            elif lower == b"connection":
                tokens = {t.strip().lower() for t in value.split(b",")}
                self.keep_alive = b"close" not in tokens and (
                    self.keep_alive or b"keep-alive" in tokens)
        if self._head_only or self.status in _NO_BODY:
            self._mode, self.complete = "length", True
        elif codings:
            if codings[-1] != b"chunked":
                self._mode, self.keep_alive = "close", False
            else:
                self._mode = "chunk-size"
        elif lengths:
            if len(lengths) != 1 or not next(iter(lengths)).isdigit():
                raise WireError("an invalid Content-Length")
            self._mode, self._left = "length", int(next(iter(lengths)))
            self.complete = self._left == 0
        else:
            self._mode, self.keep_alive = "close", False

    def _length(self, data: bytes) -> bytes:
        if self.complete:
            if data:
                self.keep_alive = False
            return b""
        if len(data) >= self._left:
            if len(data) > self._left:
                self.keep_alive = False
            data, self._left, self.complete = data[:self._left], 0, True
            return data
        self._left -= len(data)
        return data

    def _chunked(self, data: bytes) -> bytes:
        out: list[bytes] = []
        pos, size = 0, len(data)
        while pos < size and not self.complete:
            mode = self._mode
            if mode == "chunk-size":  # the usual case: a whole chunk in this read, taken at once
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > MAX_CHUNK_LINE:
                        raise WireError("a chunk-size line is too long")
                    self._buf = data[pos:]
                    break
                n = _chunk_size(data[pos:end])
                pos = end + 2
                if not n:
                    self._mode = "trailer"
                elif data[pos + n:pos + n + 2] == b"\r\n":
                    out.append(data[pos:pos + n])
                    pos += n + 2
                else:
                    self._mode, self._left = "chunk-data", n
            elif mode == "chunk-data":
                end = min(size, pos + self._left)
                out.append(data[pos:end])
                self._left -= end - pos
                pos = end
                if not self._left:
                    self._mode = "chunk-crlf"
            elif mode == "chunk-crlf":
                if size - pos < 2:
                    self._buf = data[pos:]
                    break
                if data[pos:pos + 2] != b"\r\n":
                    raise WireError("a chunk does not end with CRLF")
                pos += 2
                self._mode = "chunk-size"
            else:  # trailer lines, up to an empty one
                end = data.find(b"\r\n", pos)
                if end < 0:
                    if size - pos > MAX_CHUNK_LINE:
                        raise WireError("a trailer line is too long")
                    self._buf = data[pos:]
                    break
                self.complete = end == pos
                pos = end + 2
        if self.complete and pos < size:
            self.keep_alive = False
        return out[0] if len(out) == 1 else b"".join(out)


def _chunk_size(line: bytes) -> int:
    """A chunk-size line's size (its extensions ignored)."""
    if line.isalnum() and len(line) <= 16 and line[1:2] not in (b"x", b"X"):
        try:  # isalnum() leaves out the sign, "_" and spaces that int() would take
            return int(line, 16)
        except ValueError:
            pass
    digits = line.split(b";", 1)[0].strip(b" \t")
    if not digits or digits.strip(_HEX) or len(digits) > 16 or len(line) > MAX_CHUNK_LINE:
        raise WireError(f"an invalid chunk size: {line[:40]!r}")
    return int(digits, 16)
