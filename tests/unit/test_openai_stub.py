"""The chat-completions stub's clock and its stop (loadtest/openai_stub.py): a stall skips the
ticks it missed instead of sending them back to back, and ``stop()`` ends the streams still
open (their handlers return) instead of leaving them to be cancelled at the loop's end."""

from __future__ import annotations

import asyncio

import orjson

from loadtest.openai_stub import OpenAIStub, filler, next_due


def test_the_clock_keeps_its_pace() -> None:
    assert next_due(1.0, 1.01, 0.05) == 1.05


def test_a_stall_skips_the_ticks_it_missed() -> None:
    # due at 1.0, the process stalled until 1.5: the next tick is one interval from now,
    # not the nine missed ones back to back
    assert next_due(1.0, 1.5, 0.05) == 1.55


async def test_stop_ends_the_open_streams() -> None:
    stub = await OpenAIStub(filler(1000), tokens_per_s=5).start()
    reader, writer = await asyncio.open_connection("127.0.0.1", stub.port)
    body = orjson.dumps({"model": "m", "stream": True, "messages": []})
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))
    await reader.readuntil(b"\r\n\r\n")  # the stream is open and slow: 5 words a second
    for _ in range(100):
        if stub.streams:
            break
        await asyncio.sleep(0.01)
    assert len(stub.streams) == 1

    await stub.stop()

    await asyncio.wait_for(reader.read(), 2)  # the client sees the end of the connection
    for _ in range(100):
        serving = [t for t in asyncio.all_tasks()
                   if getattr(t.get_coro(), "__qualname__", "").endswith("_serve")]
        if not serving:
            break
        await asyncio.sleep(0.01)
    assert not serving, "the stream's handler still waits"
    assert stub.served == 0, "a stream cut by stop() is not a reply served"
    writer.close()
