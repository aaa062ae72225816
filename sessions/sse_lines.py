"""The lines of a model's event stream, split without a regular expression
(:class:`LineSplitter`), each bounded (:data:`MAX_LINE`). Used by the merging decoder
(sessions/sdk_speedups.py) and the lean model stream (sessions/lean_model.py)."""

from __future__ import annotations

MAX_LINE = 1 << 20
"""Bytes of one line of a model's event stream, at most (an event is a delta: a few hundred
bytes; a whole reply's tool arguments in one event stay far under it)."""


class LineTooLong(ValueError):
    """A line of the model's stream over :data:`MAX_LINE`: the attempt fails like a malformed
    stream."""


class LineSplitter:
    """The lines of a byte stream split at CR, LF or CRLF (a CRLF across two reads too), as
    the client's ``_SSELineDecoder`` splits them, with bytes methods instead of a regular
    expression and a Python step per line end: 8 us a streamed chunk there (a quarter of a
    streaming worker's CPU, py-spy), ~1 us here. A line still open at the end of a read is kept
    as its pieces and joined once its end comes (no copy of a growing prefix per read)."""

    __slots__ = ("_open", "_open_len", "_skip_lf")

    def __init__(self) -> None:
        self._open: list[bytes] = []
        self._open_len = 0
        self._skip_lf = False

    def _keep(self, piece: bytes) -> None:
        """Keep a piece of the line still open; a line over :data:`MAX_LINE` is an error (a
        model server that never ends a line must not grow the worker without bound)."""
        self._open_len += len(piece)
        if self._open_len > MAX_LINE:
            raise LineTooLong(f"a line of the model's stream is over {MAX_LINE} bytes")
        self._open.append(piece)

    @property
    def clean(self) -> bool:
        """Whether no line is open (the next byte begins a line)."""
        return not self._open and not self._skip_lf

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that ``chunk`` ends (without their line ends)."""
        if not chunk:
            return []
        if self._skip_lf and chunk[0] == 10:  # the LF of a CRLF split across reads
            chunk = chunk[1:]
        self._skip_lf = False
        if b"\r" in chunk:
            self._skip_lf = chunk[-1] == 13
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                self._keep(chunk)
            return []
        lines = chunk.split(b"\n")
        if self._open:
            self._keep(lines[0])
            lines[0] = b"".join(self._open)
            self._open, self._open_len = [], 0
        rest = lines.pop()
        if rest:
            self._keep(rest)
        return lines

    def finish(self) -> list[bytes]:
        """The last line, if the stream ended without its line end."""
        line, self._open, self._open_len = b"".join(self._open), [], 0
        return [line] if line else []
