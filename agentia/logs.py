"""Logging: JSON lines in production, readable lines in a terminal. Never logs tokens.

Every line carries the ids of what it is about (connection, session, turn, worker...) from a
context variable, so one connection's or one turn's story can be grepped out of many processes'
logs. :func:`bind` adds ids for the current task and the tasks it starts.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import time

import orjson

_context: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "agentia_log", default=None)


def bind(**ids: object) -> None:
    """Add ids to every log line of this task (and of tasks it creates from now on)."""
    _context.set({**(_context.get() or {}), **{k: str(v) for k, v in ids.items()}})


def ids() -> dict[str, str]:
    return _context.get() or {}


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.ids = _context.get() or {}
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {"ts": round(time.time(), 3), "level": record.levelname.lower(),
                                  "logger": record.name, "msg": record.getMessage()}
        out.update(getattr(record, "ids", {}))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ctx = getattr(record, "ids", {})
        if ctx:
            first, nl, rest = line.partition("\n")
            line = first + " [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]" + nl + rest
        return line


def setup(level: str = "info", json_lines: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("websockets").setLevel(logging.WARNING)
    logging.getLogger("agentia.ws").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # the fork the OpenAI client and MCP use: one INFO line (with its URL) per request
    logging.getLogger("httpx2").setLevel(logging.WARNING)


class Throttle:
    """At most one log line per key per ``every_s`` seconds (keys: exception types, message
    templates): what a client can trigger at will must not write a line per frame.

    ``allow`` answers whether to log now and how many were held back since the last line.
    At most ``max_keys`` keys are remembered; beyond that the table starts afresh.
    """

    __slots__ = ("_last", "every_s", "max_keys")

    def __init__(self, every_s: float = 60.0, max_keys: int = 256) -> None:
        self.every_s = every_s
        self.max_keys = max_keys
        self._last: dict[object, list[float]] = {}

    def allow(self, key: object, now: float | None = None) -> int | None:
        """None: stay quiet. An int: log now; that many lines were suppressed before it."""
        now = time.monotonic() if now is None else now
        seen = self._last.get(key)
        if seen is not None and now - seen[0] < self.every_s:
            seen[1] += 1
            return None
        if seen is None and len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = [now, 0.0]
        return int(seen[1]) if seen is not None else 0


class LibraryLogs(logging.Filter):
    """For a WebSocket library's logger: what a client can provoke (a parser error on an
    oversize or malformed frame, writing paused...) is logged at most at WARNING, without a
    traceback, and each message template at most once per ``every_s`` seconds."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.throttle = Throttle(every_s)

    def filter(self, record: logging.LogRecord) -> bool:
        held = self.throttle.allow(record.msg if isinstance(record.msg, str) else repr(record.msg))
        if held is None:
            return False
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        if record.exc_info:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args, record.exc_info, record.exc_text = None, None, None
        if held:
            record.msg = f"{record.getMessage()} [{held} similar lines suppressed]"
            record.args = None
        return True


def quiet_library(name: str, every_s: float = 60.0) -> None:
    """Install :class:`LibraryLogs` on the named logger (once)."""
    lg = logging.getLogger(name)
    if not any(isinstance(f, LibraryLogs) for f in lg.filters):
        lg.addFilter(LibraryLogs(every_s))
