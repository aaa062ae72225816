"""A reply that streams faster than a client reads (session 15): ~300 chunks of 2 KB at once
against a 64 KiB send budget. A steady but slower reader is not closed: the chunks that do not
fit are dropped for it, the run's next tenth chunk brings a ``partial``, the turn's end the
whole reply, and what it has is a prefix of the reply at every point, without a hole or a
duplicate (docs/protocol.md#send-budget; gateway/drops.py). A client that reads nothing is still
closed SLOW, by the stall rule. Before, the first chunk over the budget closed the reader
``4000 SLOW`` (reason ``send budget exceeded``)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from sessions import events as E
from sessions.bus import Bus
from sessions.keys import PARTIAL_EVERY
from tests.conftest import Cluster, Proc
from tests.e2e.stalled import (
    Frames,
    assert_reset,
    edge_report,
    metric_now,
    slow_closes,
    stalled_client,
    upgrade,
)

PIECE = 2_000
N = 300
MORE = 3 * PARTIAL_EVERY
"""A second burst once the reader has caught up: its first tenth chunk brings the partial."""
LIMITS = {"AGENTIA_SEND_BUDGET_BYTES": "65536", "AGENTIA_SEND_BUFFER_BYTES": "16384"}
"""The smallest budget and a small kernel buffer: the burst is nine budgets. The reader's test
keeps the default stall time (10 s: a loaded box may pause its thread for a while, which is not
what it tests); the stalled one's is 2 s."""
DROPPED = 'agentia_dropped_frames_total{kind="chunk"}'


def _text(seq: int) -> str:
    return f"[{seq:05d}]".ljust(PIECE, "x")  # each piece its own: a hole or a repeat shows


def _pieces(sid: str, turn: int, run: str, seqs: range) -> list[tuple[str, str, int, bytes,
                                                                      str]]:
    """As the coalescer streams them: every tenth piece carries the text since the last one
    for the partial buffer (sessions/log_redis.py ``stream_chunks``)."""
    out = []
    for seq in seqs:
        held = "".join(map(_text, range(seq - PARTIAL_EVERY + 1, seq + 1))) \
            if seq % PARTIAL_EVERY == 0 else ""
        out.append((sid, run, seq, orjson.dumps(E.chunk(turn, 1, seq, _text(seq))), held))
    return out


class Rebuilt:
    """One turn's reply as a client applies its frames (docs/protocol.md, ``chunk``)."""

    def __init__(self, full: str) -> None:
        self.full, self.text, self.applied = full, "", 0
        self.kinds: Counter[str] = Counter()
        self.last_at = time.monotonic()

    def apply(self, f: dict[str, object]) -> bool:
        """Apply one frame; True at the turn's end."""
        kind, seq = str(f["type"]), f.get("seq")
        self.kinds[kind] += 1
        self.last_at = time.monotonic()
        if kind == "chunk":
            assert seq == self.applied + 1, f"chunk {seq} after {self.applied}: a hole or a repeat"
            self.text += str(f["text"])
            self.applied = seq
        elif kind == "partial":
            assert isinstance(seq, int) and seq >= self.applied, f"partial {seq} < {self.applied}"
            self.text, self.applied = str(f["text"]), seq
        elif kind == "reply":
            self.text = str(f["text"])
        assert self.full.startswith(self.text), f"not a prefix after {kind} {seq}"
        return kind == "reply"


def _read(frames: Frames, rebuilt: Rebuilt) -> None:
    while not rebuilt.apply(frames.next()):
        pass


def _open_reader(port: int, sid: str) -> Frames:
    # a small window and 4 KB per read with a pause: far slower than a burst, never stalled
    frames = Frames(*upgrade(port, sid, rcvbuf=4096), recv=4096, pause=0.002)
    assert frames.next()["type"] == "welcome"
    return frames


async def _turn(bus: Bus, sid: str) -> tuple[int, str]:
    sub = await bus.submit(sid, "m1", "hi", user="alice")
    run = f"{sub.offset}:1:ab12"
    await bus.append(sid, E.turn_start(sub.offset, 1), run=run)
    return sub.offset, run


async def _metric(edge: Proc, series: str, within: float = 10) -> float:
    """``series`` once it is above 0 (the edge's counters reach Prometheus once a second)."""
    for _ in range(int(within / 0.2)):
        if (value := await asyncio.to_thread(metric_now, edge, series)) > 0:
            return value
        await asyncio.sleep(0.2)
    return 0.0


async def _caught_up(rebuilt: Rebuilt, reader: asyncio.Future[None], kind: str = "chunk",
                     within: float = 30) -> None:
    """Once the reader got a ``kind`` and nothing more for 0.5 s (or it ended: a failure)."""
    for _ in range(int(within / 0.1)):
        if reader.done() or (rebuilt.kinds[kind] and time.monotonic() - rebuilt.last_at > 0.5):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"the reader did not catch up within {within} s")


@pytest.mark.parametrize("then", ["reply", "more"])
async def test_a_steady_slow_reader_gets_a_prefix_at_every_point_and_is_not_closed(
        cluster: Cluster, bus: Bus, then: str) -> None:
    """``reply``: the turn ends right after the burst (its reply, larger than the budget, waits
    for the reader, not a SLOW close). ``more``: once the reader has caught up, a second burst
    whose first tenth chunk brings a partial (larger than the budget, alone), then the end."""
    edge = cluster.edge(**LIMITS)
    frames = await asyncio.to_thread(_open_reader, edge.port, "drops")
    turn, run = await _turn(bus, "drops")
    last = N + (MORE if then == "more" else 0)
    full = "".join(map(_text, range(1, last + 1)))
    rebuilt = Rebuilt(full)
    reader = asyncio.ensure_future(asyncio.to_thread(_read, frames, rebuilt))
    try:
        await bus.stream_chunks(_pieces("drops", turn, run, range(1, N + 1)))  # 600 KB at once
        if then == "more":
            await _caught_up(rebuilt, reader)  # the reader takes what the edge kept for it
            assert rebuilt.applied < N, "nothing was dropped: the test does not test the budget"
            # nothing waits for it now: the next tenth chunk's partial fits, whatever its size
            await bus.stream_chunks(_pieces("drops", turn, run, range(N + 1, last + 1)))
            await _caught_up(rebuilt, reader, "partial")  # the turn's end drops the buffer
        await bus.append("drops", E.reply(turn, full), done=turn)
        await asyncio.wait_for(reader, 60)
    except Exception as exc:  # the edge's view with the failure
        reader.cancel()
        pytest.fail(f"{rebuilt.kinds} applied {rebuilt.applied}: {exc!r}; {edge_report(edge)}")
    assert rebuilt.text == full and rebuilt.kinds["chunk"] < N, rebuilt.kinds  # some dropped
    assert rebuilt.kinds["partial"] >= (then == "more"), rebuilt.kinds
    await asyncio.to_thread(frames.send, {"type": "ping", "data": 1})  # still open
    assert await asyncio.to_thread(frames.next) == {"type": "pong", "data": 1}
    assert await _metric(edge, DROPPED) >= 1, edge_report(edge)
    assert metric_now(edge, 'agentia_closes_total{reason="slow"}') == 0, edge_report(edge)
    frames.sock.close()


async def test_a_reader_whose_budget_the_burst_filled_still_gets_its_pong(
        cluster: Cluster, bus: Bus) -> None:
    """The burst fills what the budget gives to chunks while the client reads nothing; it then
    sends a ``ping`` whose ``pong`` is ~3 KB (a control frame: nothing would bring it back) and
    starts reading. The last eighth of the budget is the control frames': the pong is queued,
    not a SLOW close (before, the chunks filled the whole budget and the pong closed it)."""
    edge = cluster.edge(**LIMITS)
    frames = await asyncio.to_thread(_open_reader, edge.port, "drops-ping")
    turn, run = await _turn(bus, "drops-ping")
    full = "".join(map(_text, range(1, N + 1)))
    await bus.stream_chunks(_pieces("drops-ping", turn, run, range(1, N + 1)))
    assert await _metric(edge, DROPPED) >= 1, edge_report(edge)  # the budget is full
    data = "p" * 3_000
    await asyncio.to_thread(frames.send, {"type": "ping", "data": data})
    rebuilt = Rebuilt(full)
    reader = asyncio.ensure_future(asyncio.to_thread(_read, frames, rebuilt))
    try:
        await _caught_up(rebuilt, reader, "pong")
        await bus.append("drops-ping", E.reply(turn, full), done=turn)
        await asyncio.wait_for(reader, 60)
    except Exception as exc:
        reader.cancel()
        pytest.fail(f"{rebuilt.kinds} applied {rebuilt.applied}: {exc!r}; {edge_report(edge)}")
    assert rebuilt.kinds["pong"] == 1 and rebuilt.text == full, rebuilt.kinds
    assert metric_now(edge, 'agentia_closes_total{reason="slow"}') == 0, edge_report(edge)
    frames.sock.close()


async def test_a_stalled_reader_of_dropped_chunks_is_still_closed_slow(
        cluster: Cluster, bus: Bus) -> None:
    """The burst, then the turn's end (the whole reply): only the stall rule can close it, no
    control frame is sent (on picows the reply may sit in the library's buffer, none in the
    outbox: the sweep's watch sees it). What all left the edge for the kernel is no stall."""
    edge = cluster.edge(**LIMITS, AGENTIA_SEND_STALL_S="2")
    stalled = await stalled_client(edge.port, "drops-stalled")
    turn, run = await _turn(bus, "drops-stalled")
    await bus.stream_chunks(_pieces("drops-stalled", turn, run, range(1, N + 1)))
    assert await _metric(edge, DROPPED) >= 1, edge_report(edge)
    await bus.append("drops-stalled", E.reply(turn, "".join(map(_text, range(1, N + 1)))),
                     done=turn)
    assert await slow_closes(edge) == 1, edge_report(edge)
    log = await asyncio.to_thread(Path(edge.log.name).read_text, errors="replace")
    assert "send stalled: reading too slowly" in log, edge_report(edge)
    await assert_reset(stalled, edge)
