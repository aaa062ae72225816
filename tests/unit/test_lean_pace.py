"""The lean streams' read pacing (sessions/lean_model.py ``Pace``): the readers waiting for
their next read share one timer and wake together, their sockets released at the tick before
they wake; a cancelled reader wakes no one early and is skipped; a new event loop starts
afresh; a stream's first piece is not held."""

from __future__ import annotations

import asyncio

import openai
import pytest

from loadtest.bench_first_read import PROBE, StampedStub, delays, stamped_reply
from loadtest.openai_stub import OpenAIStub, filler
from sessions.lean_model import LeanProvider, Pace


async def test_readers_share_one_timer_and_wake_at_its_tick() -> None:
    pace = Pace()
    loop = asyncio.get_running_loop()
    start = loop.time()
    waiters = [pace.wait(0.05) for _ in range(100)]
    timer = pace._timer
    assert timer is not None and len(pace._waiting) == 100
    waiters.append(pace.wait(0.05))
    assert pace._timer is timer, "no second timer"
    await asyncio.gather(*waiters)
    assert loop.time() - start >= 0.04
    assert pace._timer is None and pace._waiting == []


async def test_a_cancelled_reader_is_skipped_and_the_others_wake() -> None:
    pace = Pace()
    tasks = [asyncio.create_task(_read(pace)) for _ in range(3)]
    await asyncio.sleep(0)  # every task waits now
    tasks[1].cancel()
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert not tasks[0].done() and not tasks[2].done(), "the cancel woke no one"
    assert await tasks[0] == await tasks[2] == "read"


async def _read(pace: Pace) -> str:
    await pace.wait(0.05)
    return "read"


async def test_sockets_are_released_at_the_tick_then_the_readers_wake() -> None:
    pace = Pace()
    order: list[str] = []
    tasks = [asyncio.create_task(_logged(pace, n, order)) for n in range(3)]
    await asyncio.sleep(0)  # every task waits now
    tasks[2].cancel()
    await asyncio.gather(*tasks[:2])
    assert order == ["released 0", "released 1", "woke 0", "woke 1"], \
        "every release before any wake; none for the cancelled reader"


async def _logged(pace: Pace, n: int, order: list[str]) -> None:
    await pace.wait(0.05, lambda: order.append(f"released {n}"))
    order.append(f"woke {n}")


def test_a_new_event_loop_starts_afresh() -> None:
    pace = Pace()

    async def stranded() -> None:
        pace.wait(30.0)  # its loop closes with the timer pending

    asyncio.run(stranded())
    assert asyncio.run(_read(pace)) == "read"


async def test_a_streams_first_piece_is_not_held_by_the_pacing_and_the_rest_is() -> None:
    """Over real sockets (the stub at 50 tokens/s, the wire transport, pacing 200 ms): the
    reply's first token (its first read, with the role) and the one after it come as they are
    written; the third waits for the next paced read (issue 16: a voice call's first clause)."""
    warm = await OpenAIStub(filler(3)).start()  # the first reply pays for lazy imports:
    first = _provider(warm.base_url, 0.0)  # against a stub at once, so the paced stub's clock
    try:  # never falls behind (it would then write the ticks it missed in a burst)
        await stamped_reply(first, "hi")
    finally:
        await first.clients[0].close()
        await warm.stop()
    stub = StampedStub(10, tokens_per_s=50)
    await stub.start()
    provider = _provider(stub.base_url, 0.2)
    try:
        got = delays(stub.written, await stamped_reply(provider, PROBE))
    finally:
        await provider.clients[0].close()
        await stub.stop()
    assert got[0] < 100 and got[1] < 100, got  # ms: as written, not at a 200 ms tick
    assert got[2] > 100, got  # held until the tick after the second token's read


def _provider(base_url: str, read_every: float) -> LeanProvider:
    client = openai.AsyncOpenAI(api_key="k", base_url=base_url, max_retries=0)
    return LeanProvider([client], read_every=read_every)
