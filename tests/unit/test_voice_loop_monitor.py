"""The calls' event-loop monitor (livekit-agents') ticks every 50 ms, not every 20 ms."""

from __future__ import annotations

import asyncio
import os

import pytest
from livekit.agents.telemetry import loop_monitor as lk_monitor

from voice import loop_monitor


def started_tick() -> float:
    """The tick of livekit-agents' own monitor, started on a real loop as a job starts it."""
    loop = asyncio.new_event_loop()
    try:
        monitor = lk_monitor.start_monitoring(loop, name="job")
        assert monitor is not None
        try:
            return float(monitor._tick)
        finally:
            monitor.stop()
    finally:
        loop.close()


def test_a_calls_loop_monitor_ticks_every_50_ms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loop_monitor.ENV, raising=False)
    assert started_tick() == pytest.approx(0.02)  # livekit-agents' default: 100 wake-ups/s
    loop_monitor.coarse_tick()
    assert os.environ[loop_monitor.ENV] == "250"
    assert started_tick() == pytest.approx(0.05)


@pytest.mark.parametrize("theirs", ["100", "0"])
def test_the_operators_threshold_wins(monkeypatch: pytest.MonkeyPatch, theirs: str) -> None:
    monkeypatch.setenv(loop_monitor.ENV, theirs)
    loop_monitor.coarse_tick()
    assert os.environ[loop_monitor.ENV] == theirs
