"""The turn-path bench's client (loadtest/turnpath/clients.py) counts what it is sent, the same
way for a server that streams reply text as log ``delta`` events and one that sends ``chunk``
and ``partial`` frames; no network: a fake connection replays frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson

from loadtest.turnpath.clients import Client, Tally


class FakeWs:
    def __init__(self, frames: list[dict[str, Any]], close_code: int = 1000) -> None:
        self.frames, self.close_code = frames, close_code
        self.sent: list[str] = []

    async def send(self, text: str) -> None:
        self.sent.append(text)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for f in self.frames:
            yield orjson.dumps(f)


def replay(frames: list[dict[str, Any]], sends: int, close_code: int = 1000
           ) -> tuple[Client, Tally, list[asyncio.Future[None]]]:
    async def run() -> tuple[Client, Tally, list[asyncio.Future[None]]]:
        tally = Tally()
        c = Client(FakeWs(frames, close_code), "s", tally)
        futs = [await c.send("hello") for _ in range(sends)]
        await c.read()
        return c, tally, futs

    return asyncio.run(run())


def test_delta_events_and_chunk_frames_count_alike() -> None:
    old = [{"type": "ack", "id": "s-0", "offset": 1},
           {"offset": 2, "type": "turn_start", "turn": 1, "attempt": 1},
           {"offset": 3, "type": "delta", "turn": 1, "text": "You "},
           {"offset": 4, "type": "delta", "turn": 1, "text": "said"},
           {"offset": 5, "type": "reply", "turn": 1, "text": "You said"}]
    new = [old[0], old[1], {"type": "chunk", "turn": 1, "attempt": 1, "seq": 1, "text": "You "},
           {"type": "partial", "turn": 1, "attempt": 1, "seq": 2, "text": "You said"},
           {"offset": 3, "type": "reply", "turn": 1, "text": "You said"}]
    c_old, t_old, _ = replay(old, 1)
    c_new, t_new, _ = replay(new, 1)
    assert t_old.frames["delta"] == 2 and t_new.frames["chunk"] == 1
    assert t_new.frames["partial"] == 1 and t_old.frames["partial"] == 0
    for c, t in ((c_old, t_old), (c_new, t_new)):
        assert c.lost() == 0 and len(t.turns) == 1 and len(t.firsts) == 1, t
        assert t.reply_words == 2 and t.reply_chars == 8


def test_an_acked_turn_without_an_end_is_lost_and_a_refused_send_is_not() -> None:
    frames = [{"type": "ack", "id": "s-0", "offset": 1},
              {"type": "error", "code": "overloaded", "ref": "s-1", "retryable": True},
              {"type": "chunk", "turn": 1, "attempt": 1, "seq": 1, "text": "You "}]
    c, tally, futs = replay(frames, 2, close_code=4000)
    assert c.lost() == 1 and tally.turns == []
    assert tally.errors == {"overloaded": 1, "close_4000": 1}
    assert all(f.done() for f in futs)  # the closed connection releases its senders


def test_an_end_before_its_ack_still_ends_the_turn() -> None:
    frames = [{"offset": 2, "type": "reply", "turn": 1, "text": "hi"},
              {"type": "ack", "id": "s-0", "offset": 1}]
    c, tally, _ = replay(frames, 1)
    assert c.lost() == 0 and len(tally.turns) == 1
