"""Log throttling: what a client can trigger at will is logged at most once a minute per kind."""

from __future__ import annotations

import logging

import pytest

from agentia.logs import LibraryLogs, Throttle, quiet_library


def test_throttle_once_per_interval_per_key() -> None:
    t = Throttle(every_s=60.0)
    assert t.allow(ValueError, now=0.0) == 0
    assert t.allow(ValueError, now=1.0) is None
    assert t.allow(ValueError, now=59.9) is None
    assert t.allow(KeyError, now=2.0) == 0  # another kind: its own line
    assert t.allow(ValueError, now=60.0) == 2  # two were held back
    assert t.allow(ValueError, now=61.0) is None


def test_throttle_remembers_a_bounded_number_of_keys() -> None:
    t = Throttle(every_s=60.0, max_keys=3)
    for key in range(10):
        assert t.allow(key, now=0.0) == 0
    assert len(t._last) <= 3


@pytest.fixture
def lib_logger() -> logging.Logger:
    lg = logging.getLogger("agentia.test-library")
    lg.filters.clear()
    lg.propagate = False
    lg.setLevel(logging.DEBUG)
    return lg


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_library_errors_become_one_warning_a_minute(lib_logger: logging.Logger) -> None:
    keep = _Keep()
    lib_logger.handlers[:] = [keep]
    quiet_library(lib_logger.name)
    quiet_library(lib_logger.name)  # once only
    assert sum(isinstance(f, LibraryLogs) for f in lib_logger.filters) == 1
    for n in range(100):
        lib_logger.error("WS parser error: %s, initiate disconnect", n)
    try:
        raise ValueError("bad frame")
    except ValueError:
        lib_logger.exception("on_ws_frame failed")
    assert len(keep.records) == 2
    first, second = keep.records
    assert first.levelno == logging.WARNING and first.getMessage().startswith("WS parser error: 0")
    assert second.levelno == logging.WARNING and second.exc_info is None
    assert "ValueError: bad frame" in second.getMessage()
    # an adapter (what the picows transport hands picows) goes through the same filter
    logging.LoggerAdapter(lib_logger, {}).error("WS parser error: %s, initiate disconnect", 1)
    assert len(keep.records) == 2


def test_a_workers_outage_lines_are_one_per_message_every_10_s(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    """An outage reaches every running session of a worker at once: 1,000 sessions write one
    line per message (then one every 10 s, with the count held back), not 1,000."""
    from sessions import worker

    monkeypatch.setattr(worker, "_OUTAGES", Throttle(10.0))
    with caplog.at_level(logging.WARNING, logger="agentia.worker"):
        for i in range(1_000):
            worker._outage("Redis unavailable while running session %s; retrying", f"s{i}")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["Redis unavailable while running session s0; retrying"]
