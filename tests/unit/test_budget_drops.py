"""Frames a client can do without (chunk, partial, interim transcript) that do not fit the send
budget are dropped for that connection, not a SLOW close (gateway/drops.py); the connection then
gets the run back from its next tenth chunk's partial, and a client that takes nothing is still
closed SLOW by the stall rule. With a fake transport: no sockets."""

from __future__ import annotations

from typing import Any, cast

from agentia.codes import CloseCode
from gateway import chunks
from gateway import drops as D
from gateway import session_protocol as S
from gateway.connection import Connection
from gateway.host import Host
from sessions.keys import PARTIAL_EVERY
from sessions.roles import ChunkAt, Partial
from tests.unit.test_send_budget import BUDGET, FakeNode, FakeTransport

RUN = b"3:1:a"
CHUNK = b"c" * 10_000


def _conn(transport: FakeTransport) -> tuple[Connection, FakeNode]:
    node = FakeNode()
    state = S.SessionProtocol(node.rules, "s", "u", None, 0.0)
    conn = Connection(cast(Host, node), state)
    conn.attach(cast(Any, transport))
    state.on_opened(b"{}", "e1", 0)
    return conn, node


def _at(seq: int) -> ChunkAt:
    return ChunkAt(3, 1, RUN, seq)


def test_a_dropped_chunk_or_partial_waits_for_the_next_tenth_chunk() -> None:
    assert chunks.on_dropped(None) is None
    cur, verdict = chunks.on_chunk(None, _at(1))
    cur = chunks.on_dropped(cur)
    assert cur == _at(0)
    for seq in range(2, PARTIAL_EVERY):  # the run's own chunks, dropped: no hole
        assert chunks.on_chunk(cur, _at(seq)) == (cur, chunks.Verdict.DROP)
    _, verdict = chunks.on_chunk(cur, _at(PARTIAL_EVERY))
    assert verdict is chunks.Verdict.READ_PARTIAL


async def test_chunks_over_the_budget_are_dropped_not_slow() -> None:
    t = FakeTransport()  # takes nothing
    conn, node = _conn(t)
    for seq in range(1, 3 * PARTIAL_EVERY + 1):  # 300 KB at once: four and a half budgets
        conn.on_chunk(_at(seq), CHUNK)
        assert conn.pending() <= BUDGET
    assert not conn.closed and node.metrics["slow_closes"] == 0
    # chunks 1-5; 6 dropped (the budget's last eighth is the control frames'), then the chunk
    # rules drop the rest
    assert conn.queued == 50_000
    # one drop counted, not one per chunk; the tenth chunk asked for the partial (spawned)
    assert node.metrics["dropped_chunk"] == 1
    assert conn.state.chunk_at == _at(chunks.READING)


async def test_a_partial_over_the_budget_is_dropped_and_read_again_later() -> None:
    conn, node = _conn(FakeTransport())
    for seq in range(1, 8):
        conn.on_chunk(_at(seq), CHUNK)
    partial = Partial(3, 1, RUN, PARTIAL_EVERY, "x" * 10_000 * PARTIAL_EVERY)
    conn.execute(cast(S.Write, conn.state.on_partial(partial)[0]))
    assert not conn.closed and node.metrics["dropped_partial"] == 1
    assert conn.queued == 50_000 and conn.state.chunk_at == _at(0)
    assert list(conn.outbox or ()) == [CHUNK] * 5  # no partial queued


async def test_a_partial_that_fits_is_written() -> None:
    t = FakeTransport(blocked=False)
    conn, node = _conn(t)
    partial = Partial(3, 1, RUN, PARTIAL_EVERY, "x" * 100)
    conn.execute(cast(S.Write, conn.state.on_partial(partial)[0]))
    assert t.buf > 100 and node.metrics["dropped_partial"] == 0
    assert conn.state.chunk_at == _at(PARTIAL_EVERY)


async def test_an_interim_transcript_over_the_budget_is_dropped() -> None:
    conn, node = _conn(FakeTransport())
    for _ in range(6):
        conn.on_live_frame(CHUNK)
    assert not conn.closed and node.metrics["dropped_transcript"] == 1
    assert conn.queued == 50_000


async def test_a_control_frame_after_drops_still_closes_slow() -> None:
    conn, node = _conn(FakeTransport())
    for seq in range(1, 8):
        conn.on_chunk(_at(seq), CHUNK)
    conn.push(b"a" * 8_000)  # an ack or a pong fits in the control frames' eighth
    assert not conn.closed
    conn.push(b"e" * 8_000)  # one more over the budget: nothing brings it back
    assert conn.closed and node.metrics["slow_closes"] == 1


async def test_a_client_that_takes_nothing_after_a_drop_is_closed_slow() -> None:
    """Every byte in the library's buffer, none in the outbox (picows writes there at once):
    the outbox's stall rule cannot see it, the drop's watch does."""
    t = FakeTransport(blocked=False)
    conn, _ = _conn(t)
    for seq in range(1, 8):
        conn.on_chunk(_at(seq), CHUNK)
    assert conn.outbox is None and t.buf == 50_000 and conn.watch is not None
    start = conn.watch.at
    assert conn.stalled(start + 0.4) is None
    assert conn.stalled(start + 0.6) == S.Close(CloseCode.SLOW,
                                                "send stalled: reading too slowly")


async def test_a_client_that_reads_after_a_drop_is_not_stalled() -> None:
    t = FakeTransport(blocked=False)
    conn, _ = _conn(t)
    for seq in range(1, 8):
        conn.on_chunk(_at(seq), CHUNK)
    assert conn.watch is not None
    start = conn.watch.at
    # it reads 20 KB, and the edge writes 20 KB more meanwhile: pending is back where it was
    t.buf -= 20_000
    conn.on_live_frame(b"t" * 20_000)
    assert conn.stalled(start + 0.4) is None  # the kernel took 20 KB: progress now
    assert conn.stalled(start + 0.8) is None
    assert conn.stalled(start + 1.0) is not None  # nothing since
    t.buf = 0
    assert conn.stalled(start + 1.0) is None and conn.watch is None  # caught up


async def test_bytes_left_in_the_library_buffer_are_watched_by_the_sweep() -> None:
    """No drop, no outbox: a frame that fitted sits in the library's buffer (picows) and the
    kernel takes none of it: stalled all the same."""
    t = FakeTransport(blocked=False)
    conn, _ = _conn(t)
    conn.push(b"r" * 200_000)  # the turn's reply, alone: it fits
    assert conn.outbox is None and conn.watch is None
    assert conn.stalled(10.0) is None and conn.watch is not None  # the sweep starts watching
    assert conn.stalled(10.4) is None
    assert conn.stalled(10.6) is not None


def test_the_watch_counts_what_the_kernel_took_whatever_was_added() -> None:
    w = D.Watch(50_000, 1.0)
    assert w.progress(50_000, 2.0) == 1.0
    w.added += 30_000
    assert w.progress(60_000, 3.0) == 3.0  # 20 KB out, 30 KB in: pending grew, still progress
    assert w.progress(60_000, 4.0) == 3.0
    w.added += 10
    assert w.progress(60_010, 5.0) == 3.0


def test_a_paced_frame_larger_than_what_is_free_waits_until_it_fits() -> None:
    """A replayed event (the turn's reply) that would not fit next to what waits used to be
    queued once under half the budget, and closed SLOW: it waits until it fits."""
    conn, _ = _conn(FakeTransport())
    st = conn.state
    assert not st.must_pace(1_000, 1, 60_000)
    assert st.must_pace(10_000, 1, 60_000)
    assert st.must_pace(1, 1, 5 * BUDGET) and not st.must_pace(0, 0, 5 * BUDGET)
