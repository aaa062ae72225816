"""What the direct path's model pump (sessions/model_pump.py) does per model event, counted
(issue 13, session 20): a burst of events is read with no Python call an event but the
stream's own step (an ``asyncio.Event.set`` and a ``full()`` each before, 28 events a demo
turn); the turn is still woken once for the burst, and the events, their order, the end and
the bound are the same."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from types import FrameType
from typing import Any

from sessions.model_pump import END, MAX_WAITING, ModelPump


async def _burst(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def _taken(pump: ModelPump) -> list[Any]:
    out = []
    while (event := await pump.next()) is not END:
        out.append(event)
        out.extend(pump.take_ready(int))
    return out


async def test_a_burst_costs_the_pump_no_call_per_event() -> None:
    n = MAX_WAITING // 2  # not full: what a demo turn's 28 events are
    pump = ModelPump()
    code = ModelPump._run.__code__
    calls = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal calls
        if event == "call" and frame.f_back is not None and frame.f_back.f_code is code \
                and frame.f_code is not _burst.__code__:
            calls += 1  # a Python function the pump's loop called (not the stream's step)

    sys.setprofile(profile)
    try:
        pump.start(_burst(n))
        got = await _taken(pump)
    finally:
        sys.setprofile(None)
    assert got == list(range(n))
    # its wake-ups of the turn (the burst's, the end's) and the stream's close, whatever the
    # burst's length (258 before for these 128 events: ``Event.set`` and ``full()`` each)
    assert calls <= 3, calls
    await pump.stop()


async def test_the_turn_is_woken_once_for_a_burst() -> None:
    """The turn waits, the pump reads 100 events in one step: one wake-up of the turn."""
    pump = ModelPump()
    woken = 0
    loop = asyncio.get_running_loop()
    make = loop.create_future

    def counted() -> asyncio.Future[Any]:
        nonlocal woken
        woken += 1
        return make()
    loop.create_future = counted  # type: ignore[method-assign]
    try:
        pump.start(_burst(100))
        got = await _taken(pump)
    finally:
        del loop.create_future
    assert got == list(range(100))
    assert woken <= 2, woken  # the first wait, and the one that finds the end
    await pump.stop()


async def test_a_full_pump_waits_for_room_and_loses_nothing() -> None:
    """Past ``MAX_WAITING`` the pump stops reading until half is taken; every event comes."""
    pump = ModelPump()
    pump.start(_burst(3 * MAX_WAITING))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert len(pump.got) == MAX_WAITING
    assert await _taken(pump) == list(range(3 * MAX_WAITING))
    await pump.stop()
