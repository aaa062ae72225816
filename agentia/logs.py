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
