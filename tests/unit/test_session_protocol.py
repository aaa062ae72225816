"""The per-connection state machine without an event loop: feed frames, events and log pages
with a clock value, assert the actions it returns."""

from __future__ import annotations

from collections import Counter

import orjson
import pytest

from agentia.codes import AgentiaError, BusUnavailable, CloseCode, ErrorCode, SessionLost
from gateway import protocol as P
from gateway import session_protocol as S
from sessions.bus import frame_for
from sessions.keys import PARTIAL_EVERY
from sessions.roles import ChunkAt, Partial

LIMITS = P.Limits(max_frame_bytes=65_536, max_text_chars=100, rate_per_s=5.0, burst=20.0,
                  send_queue=8, send_budget_bytes=65_536, ping_rate_per_s=20.0,
                  ping_burst=40.0, heartbeat_s=25.0, idle_timeout_s=90.0)


def _proto(offset: int = 0, epoch: str = "e1") -> S.SessionProtocol:
    p = S.SessionProtocol(S.Rules(LIMITS, 10.0, Counter()), "s1", "ann", None, 0.0)
    p.on_opened(b"welcome", epoch, offset)
    return p


def _frames(actions: list[S.Action]) -> list[dict[str, object]]:
    return [orjson.loads(a.frame) for a in actions if isinstance(a, S.Write)]


def _closes(actions: list[S.Action]) -> list[CloseCode]:
    return [a.code for a in actions if isinstance(a, S.Close)]


def test_opened_welcomes_and_fills_only_what_came_meanwhile() -> None:
    p = S.SessionProtocol(S.Rules(LIMITS, 10.0, Counter()), "s1", "ann", None, 0.0)
    assert p.on_event(3, b"x") is None  # before the open: deferred
    assert p.on_opened(b"hi", "e1", 2) == [S.Write(b"hi"), S.FILL]
    q = S.SessionProtocol(S.Rules(LIMITS, 10.0, Counter()), "s1", "ann", None, 0.0)
    assert q.on_opened(b"hi", "e1", 2) == [S.Write(b"hi")]


def test_frames_become_requests() -> None:
    p = _proto()
    send = p.receive(b'{"type":"send","id":"a","text":"hi"}', 1.0)
    assert send == [S.Submit(P.Send("a", "hi"))]
    assert p.receive(b'{"type":"resume","after":3,"id":"r"}', 1.0) == [
        S.Replay(P.Resume(3, None, "r"))]
    assert p.receive(b'{"type":"cancel","turn":2}', 1.0) == [S.CancelTurn(P.Cancel(2))]
    assert _frames(p.receive(b'{"type":"ping","data":[1]}', 1.0)) == [
        {"type": "pong", "data": [1]}]
    assert p.last_seen == 1.0 and p.rules.metrics["frames_in"] == 4


def test_approve_is_a_request_rate_limited_like_cancel_and_answered_with_an_ack() -> None:
    p = _proto()
    raw = b'{"type":"approve","id":"a1","call_id":"call_9","approved":false,"message":"no"}'
    want = [S.ApproveCall(P.Approve("a1", "call_9", False, "no"))]
    assert all(p.receive(raw, 5.0) == want for _ in range(int(LIMITS.burst)))
    err = _frames(p.receive(raw, 5.0))[0]
    assert err["code"] == "rate_limited" and err["ref"] == "a1"
    assert _frames(p.on_approved(P.Approve("a1", "call_9", False), 7)) == [
        {"type": "ack", "id": "a1", "offset": 7, "duplicate": False}]
    missing = AgentiaError(ErrorCode.NO_SUCH_APPROVAL, "none")
    out = p.on_failure(missing, P.Approve("a2", "c", True), 6.0)
    assert _frames(out) == [{"type": "error", "code": "no_such_approval", "message": "none",
                             "retryable": False, "ref": "a2"}]
    assert _closes(out) == [] and p.strikes.count == 0  # not a strike: a race, not abuse


def test_outcomes_become_answers() -> None:
    p = _proto()
    assert _frames(p.on_submitted(P.Send("a", "hi"), 7, False)) == [
        {"type": "ack", "id": "a", "offset": 7, "duplicate": False}]
    assert _frames(p.on_cancelled(P.Cancel(None, "c"), 4, 1.0)) == [
        {"type": "cancelling", "turn": 4, "id": "c"}]
    err = _frames(p.on_cancelled(P.Cancel(9, "c"), 0, 1.0))[0]
    assert (err["code"], err["ref"]) == ("turn_not_active", "c")
    assert p.rules.metrics["turns_accepted"] == 1


def test_bad_frames_are_strikes_then_flood() -> None:
    p = _proto()
    for i in range(P.MAX_STRIKES):
        out = p.receive(b"{nope", 100.0)
        assert _frames(out)[0]["code"] == "bad_json" and not _closes(out), i
    assert _closes(p.receive(b'{"type":"what"}', 100.0)) == [CloseCode.FLOOD]
    assert p.rules.metrics["error:bad_json"] == P.MAX_STRIKES


def test_strikes_decay() -> None:
    p = _proto()
    for i in range(P.MAX_STRIKES * 3):  # one bad frame a second never floods
        assert not _closes(p.receive(b"[]", float(i)))


def test_internal_failures_are_strikes_and_lost_sessions_close() -> None:
    p = _proto()
    for _ in range(P.MAX_STRIKES):
        assert not _closes(p.on_failure(KeyError("bug"), None, 5.0))
    out = p.on_failure(KeyError("bug"), None, 5.0)
    assert _frames(out)[0]["code"] == "internal" and _closes(out) == [CloseCode.FLOOD]
    lost = p.on_failure(SessionLost(), P.Send("a", "x"), 5.0)
    assert _frames(lost)[0]["ref"] == "a" and _closes(lost) == [CloseCode.SESSION_LOST]
    down = p.on_failure(BusUnavailable(), P.Cancel(None, "c"), 5.0)
    assert (_frames(down)[0]["code"], _frames(down)[0]["ref"]) == ("unavailable", "c")
    assert not _closes(down)


def test_rate_limit_then_flood_for_not_waiting() -> None:
    p = _proto()
    frame = b'{"type":"cancel","id":"c"}'
    assert all(p.receive(frame, 10.0) == [S.CancelTurn(P.Cancel(None, "c"))]
               for _ in range(20))  # the burst
    err = _frames(p.receive(frame, 10.0))[0]
    assert (err["code"], err["ref"], err["retry_after_ms"]) == ("rate_limited", "c", 200)
    # waiting as told: a token again, no strike
    assert p.receive(frame, 10.2) == [S.CancelTurn(P.Cancel(None, "c"))]
    closes = [_closes(p.receive(frame, 10.2 + i * 1e-3)) for i in range(1, 40)]
    assert [CloseCode.FLOOD] in closes  # kept sending while told to wait
    assert p.rules.metrics["error:rate_limited"] >= P.MAX_STRIKES


def test_ping_allowance_is_shared_with_websocket_pings() -> None:
    p = _proto()
    assert all(p.on_ws_ping(1.0) is None for _ in range(30))
    for _ in range(10):
        assert _frames(p.receive(b'{"type":"ping"}', 1.0))[0]["type"] == "pong"
    assert _frames(p.receive(b'{"type":"ping"}', 1.0))[0]["code"] == "rate_limited"
    assert p.on_ws_ping(1.0) == S.Close(CloseCode.FLOOD, "too many pings")
    assert p.on_ws_ping(1.1) is None  # 20 per second come back


def test_bounds() -> None:
    p = _proto()
    too_long = orjson.dumps({"type": "send", "id": "a", "text": "x" * 101})
    assert _frames(p.receive(too_long, 1.0))[0]["ref"] == "a"
    huge = orjson.dumps({"type": "resume", "after": P.MAX_NUMBER + 1})
    assert _frames(p.receive(huge, 1.0))[0]["code"] == "bad_frame"
    deep = b'{"type":"ping","data":' + b"[" * 40 + b"]" * 40 + b"}"
    assert _frames(p.receive(deep, 1.0))[0]["code"] == "bad_frame"


def test_send_budget_and_queue() -> None:
    p = _proto()
    assert p.on_write(0, 200_000, 0) is None  # alone, larger than the budget: goes out
    assert p.on_write(60_000, 6_000, 1) == S.Close(CloseCode.SLOW,
                                                   "send budget exceeded: reading too slowly")
    assert p.on_write(100, 10, 7) is None
    assert p.on_write(100, 10, 8) is not None  # send_queue 8
    assert p.must_pace(32_768, 0) and p.must_pace(0, 4) and not p.must_pace(32_767, 3)
    assert p.stalled(0.0, 10.0) is None and p.stalled(0.0, 10.1) is not None
    assert p.over_budget(65_537) and not p.over_budget(65_536)
    # a frame the connection can do without leaves the last eighth to control frames
    assert p.on_write(57_000, 344, 1, optional=True) is None
    assert p.on_write(57_000, 345, 1, optional=True) is not None
    assert p.on_write(57_345, 100, 1) is None  # an ack or pong still fits there
    assert p.on_write(0, 200_000, 0, optional=True) is None  # alone: goes out as before
    assert p.on_write(100, 10, 6, optional=True) is None
    assert p.on_write(100, 10, 7, optional=True) is not None  # 8 - 8 // 8


def test_sweep() -> None:
    p = S.SessionProtocol(S.Rules(LIMITS, 10.0, Counter()), "s", "u", 1000.0, 0.0)
    assert p.sweep(90.0, 1000.0, 0.0) is None
    assert p.sweep(90.1, 0.0, 0.0) == S.Close(CloseCode.IDLE,
                                              "idle: no frame within the idle timeout")
    assert p.sweep(1.0, 1031.0, 30.0) is not None and p.sweep(1.0, 1029.0, 30.0) is None


def _log(n: int) -> list[tuple[int, bytes]]:
    return [(o, b'{"type":"delta","n":%d}' % o) for o in range(1, n + 1)]


def _run_replay(p: S.SessionProtocol, log: list[tuple[int, bytes]], epoch: str = "e1",
                live: list[int] | None = None) -> tuple[list[int], list[S.Action]]:
    """Drive a replay as the connection does; ``live`` offsets arrive after each page."""
    written: list[int] = []
    while (req := p.replay_request()) is not None:
        page = [(o, e) for o, e in log if o > req.after][:req.count]
        for w in p.on_replay_page(page, True, epoch, len(log)):
            written.append(int(orjson.loads(w.frame)["offset"]))
        for o in live or ():
            assert p.on_event(o, frame_for(o, b'{"x":1}')) is None  # deferred meanwhile
        live = []
        done = p.page_written()
        if isinstance(done, S.ReadPartial):  # a resume: the partial is read, then it ends
            done = p.resume_ends(None)
        if done is not None:
            return written, done
    raise AssertionError("the replay never ended")


def test_gap_fills_from_the_log_in_order() -> None:
    p = _proto(offset=2)
    assert p.on_event(3, b"three") == b"three"
    assert p.on_event(3, b"three") is None  # a duplicate
    assert p.on_event(6, b"six") == S.FILL  # 4 and 5 are missing
    assert p.on_event(7, b"seven") is None
    p.begin_replay(S.FILL)
    written, done = _run_replay(p, _log(7))
    assert written == [4, 5, 6, 7] and done == []
    assert p.on_event(8, b"eight") == b"eight"


def test_resume_answers_after_its_events_and_events_during_it_wait() -> None:
    p = _proto(offset=5)
    p.begin_replay(S.Replay(P.Resume(1, "e1", "r")))
    # 13 is appended (and delivered live) while the first page is being written
    written, done = _run_replay(p, _log(13), live=[13])
    assert written == list(range(2, 14))
    answer = _frames(done)[0]
    assert answer["type"] == "resumed" and answer["id"] == "r" and answer["recovered"] is True
    assert answer["offset"] == written[-1] and p.replay_request() is None


def test_resume_page_end_waits_for_the_writes() -> None:
    """The replay is over only after page_written: a live event that arrives while the
    last page is still being written is deferred, never sent ahead of it."""
    p = _proto(offset=0)
    p.begin_replay(S.Replay(P.Resume(0, None)))
    writes = p.on_replay_page(_log(2), True, "e1", 2)
    assert len(writes) == 2
    assert p.on_event(3, b"three") is None  # still catching up
    assert p.page_written() is None  # 3 was seen: another page
    assert [w.frame for w in p.on_replay_page(_log(3)[2:], True, "e1", 3)] == [
        frame_for(3, _log(3)[2][1])]
    assert p.page_written() is S.READ_PARTIAL
    assert _frames(p.resume_ends(None) or [])[0]["offset"] == 3


def test_no_live_event_overtakes_resumed_while_the_partial_is_read() -> None:
    """An event appended while the resume's partial is read waits (it was written ahead of
    a resumed frame whose offset was already stale): the log is read again, then the
    answer ends with the partial and resumed at that event, and live events flow."""
    p = _proto(offset=4)
    p.begin_replay(S.Replay(P.Resume(2, "e1", "r")))
    p.on_replay_page(_log(4)[2:], True, "e1", 4)
    assert p.page_written() is S.READ_PARTIAL
    assert p.on_event(5, b"five") is None  # deferred, not written ahead of resumed
    assert p.on_live_frame() is False
    assert p.resume_ends(Partial(5, 1, b"5:1:a", 1, "x")) is None  # 5 came: another page
    assert p.replay_request() == S.ReadLog(4, "e1", S.REPLAY_FIRST_PAGE)
    assert [w.frame for w in p.on_replay_page(_log(5)[4:], True, "e1", 5)] == [
        frame_for(5, _log(5)[4][1])]
    assert p.page_written() is S.READ_PARTIAL
    end = _frames(p.resume_ends(Partial(5, 1, b"5:1:a", 1, "x")) or [])
    assert [f["type"] for f in end] == ["partial", "resumed"] and end[1]["offset"] == 5
    assert p.on_event(6, b"six") == b"six" and p.replay_request() is None


def test_resume_gap_rule_unrecovered_epoch() -> None:
    """A resume whose events are gone (trimmed or another epoch) restarts from what the
    log still has and says recovered: false with the current epoch."""
    p = _proto(offset=9, epoch="e2")
    p.begin_replay(S.Replay(P.Resume(3, "old", "r")))
    req = p.replay_request()
    assert req == S.ReadLog(3, "old", S.REPLAY_FIRST_PAGE)
    writes = p.on_replay_page([(8, b'{"a":1}'), (9, b'{"a":2}')], False, "e2", 9)
    assert [orjson.loads(w.frame)["offset"] for w in writes] == [8, 9]
    assert p.page_written() is S.READ_PARTIAL
    assert p.resume_ends(None) == [S.Write(P.resumed_frame(False, 9, "e2", "r").encode())]


def test_page_size_follows_the_send_budget() -> None:
    p = _proto()
    p.begin_replay(S.FILL)
    big = [(1, b"{" + b"x" * 10_000 + b"}")] * 4
    p.on_replay_page(big, True, "e1", 4)
    assert p.page_written() is None
    req = p.replay_request()
    assert req is not None and req.count == 65_536 // 2 // (10_002 + 16)


def test_replay_failure_stops_deferring() -> None:
    p = _proto()
    assert p.on_event(5, b"five") == S.FILL
    p.begin_replay(S.FILL)
    p.on_replay_failed()
    assert p.replay_request() is None
    assert p.on_event(6, b"six") == S.FILL  # the next live event retries


@pytest.mark.parametrize(("epoch", "offset", "want"), [
    ("e2", 4, "resumed"), ("e1", 9, "fill"), ("e1", 4, None)])
def test_reopened(epoch: str, offset: int, want: str | None) -> None:
    p = _proto(offset=4)
    action = p.on_reopened(epoch, offset)
    if want == "resumed":
        assert isinstance(action, S.Write)
        assert orjson.loads(action.frame)["solicited"] is False and p.epoch == "e2"
    elif want == "fill":
        assert action == S.FILL and p.on_delivery_lost() is None
    else:
        assert action is None and p.on_delivery_lost() == S.FILL


def test_errors_of_agentia_keep_their_ref() -> None:
    p = _proto()
    err = AgentiaError(ErrorCode.OVERLOADED, "busy", "mine", 2000)
    assert _frames(p.on_failure(err, P.Send("other", "x"), 1.0))[0]["ref"] == "mine"


# ---------------------------------------------------------------- chunks


def _at(turn: int, attempt: int, run: bytes, seq: int) -> ChunkAt:
    return ChunkAt(turn, attempt, run, seq)


def test_chunks_of_a_run_go_out_in_order_each_once() -> None:
    p = _proto(offset=3)
    assert p.on_chunk(_at(3, 1, b"3:1:a", 1), b"c1") == b"c1"
    assert p.on_chunk(_at(3, 1, b"3:1:a", 2), b"c2") == b"c2"
    assert p.on_chunk(_at(3, 1, b"3:1:a", 2), b"c2") is None  # a duplicate
    assert p.on_chunk(_at(3, 1, b"3:1:b", 1), b"d1") == b"d1"  # the attempt run again
    assert p.on_chunk(_at(3, 2, b"3:2:c", 1), b"e1") == b"e1"  # a retried attempt
    assert p.on_chunk(_at(3, 1, b"3:1:b", 2), b"d2") is None  # the older attempt's, stale
    assert p.on_chunk(_at(5, 1, b"5:1:d", 1), b"f1") == b"f1"  # the next turn


def test_a_chunk_out_of_order_reads_the_partial_once_then_goes_on_from_it() -> None:
    p = _proto(offset=3)
    assert p.on_chunk(_at(3, 1, b"3:1:a", 4), b"c4") is S.READ_PARTIAL  # joined mid-turn
    assert p.on_chunk(_at(3, 1, b"3:1:a", 5), b"c5") is None  # the partial will hold it
    out = p.on_partial(Partial(3, 1, b"3:1:a", 5, "abcde"))
    assert _frames(out) == [{"type": "partial", "turn": 3, "attempt": 1, "seq": 5,
                             "text": "abcde"}]
    assert p.on_chunk(_at(3, 1, b"3:1:a", 5), b"c5") is None
    assert p.on_chunk(_at(3, 1, b"3:1:a", 6), b"c6") == b"c6"


def test_no_partial_to_be_had_waits_for_the_piece_the_buffer_holds() -> None:
    p = _proto(offset=3)
    assert p.on_chunk(_at(3, 1, b"3:1:a", 4), b"c4") is S.READ_PARTIAL
    assert p.on_partial(None) == []  # no tenth piece yet, the turn ended, or Redis failed
    for seq in range(5, PARTIAL_EVERY):
        assert p.on_chunk(_at(3, 1, b"3:1:a", seq), b"c") is None  # no read per chunk
    assert p.on_chunk(_at(3, 1, b"3:1:a", PARTIAL_EVERY), b"c") is S.READ_PARTIAL
    assert p.on_partial(None) == []
    assert p.on_chunk(_at(7, 1, b"7:1:b", 1), b"n1") == b"n1"


def test_a_partial_behind_the_chunks_is_read_again_at_the_next_piece_it_holds() -> None:
    """The buffer gets every PARTIAL_EVERY-th piece's text only (sessions/keys.py): what is
    read may stop short of the chunk that asked for it. It is written at once (the text so
    far), the chunks after it are dropped until the next piece the buffer holds, and a second
    partial takes over from there: no hole, no duplicate."""
    n = PARTIAL_EVERY
    p = _proto(offset=3)
    assert p.on_chunk(_at(3, 1, b"3:1:a", n + 3), b"c") is S.READ_PARTIAL  # joined mid-turn
    first = _frames(p.on_partial(Partial(3, 1, b"3:1:a", n, "x" * n)))
    assert [(f["seq"], f["text"]) for f in first] == [(n, "x" * n)]
    for seq in range(n + 4, 2 * n):
        assert p.on_chunk(_at(3, 1, b"3:1:a", seq), b"c") is None
    assert p.on_chunk(_at(3, 1, b"3:1:a", 2 * n), b"c") is S.READ_PARTIAL
    assert p.on_chunk(_at(3, 1, b"3:1:a", 2 * n + 1), b"c") is None  # while reading
    second = _frames(p.on_partial(Partial(3, 1, b"3:1:a", 2 * n + 1, "y" * (2 * n + 1))))
    assert [f["seq"] for f in second] == [2 * n + 1]
    assert p.on_chunk(_at(3, 1, b"3:1:a", 2 * n + 1), b"dup") is None
    assert p.on_chunk(_at(3, 1, b"3:1:a", 2 * n + 2), b"next") == b"next"


def test_chunks_wait_while_the_log_is_replayed() -> None:
    """A chunk must not overtake its turn_start: none goes out during a replay, and the
    resume's answer reads the partial before resumed."""
    p = _proto(offset=3)
    p.begin_replay(S.Replay(P.Resume(0, None, "r")))
    assert p.on_chunk(_at(3, 1, b"3:1:a", 1), b"c1") is None
    p.on_replay_page([(1, b'{"a":1}'), (2, b'{"a":2}'), (3, b'{"a":3}')], True, "e1", 3)
    assert p.page_written() is S.READ_PARTIAL
    assert p.on_chunk(_at(3, 1, b"3:1:a", 2), b"c2") is None  # still before the answer
    assert _frames(p.resume_ends(Partial(3, 1, b"3:1:a", 2, "xy")) or [])[0]["seq"] == 2
    assert p.on_chunk(_at(3, 1, b"3:1:a", 3), b"c3") == b"c3"


def test_off_log_frames_go_only_to_a_live_connection() -> None:
    """An interim transcript (an off-log frame) is written to a connection that is live: not
    before its welcome, not while it replays the log (a resume does not get interims)."""
    early = S.SessionProtocol(S.Rules(LIMITS, 10.0, Counter()), "s1", "ann", None, 0.0)
    assert early.on_live_frame() is False  # not welcomed yet
    p = _proto(offset=3)
    assert p.on_live_frame() is True
    p.begin_replay(S.Replay(P.Resume(0, None, "r")))
    assert p.on_live_frame() is False
    p.on_replay_page([(1, b'{"a":1}'), (2, b'{"a":2}'), (3, b'{"a":3}')], True, "e1", 3)
    p.page_written()
    assert p.on_live_frame() is False  # until the answer ends
    p.resume_ends(None)
    assert p.on_live_frame() is True
    assert p.on_event(6, b"six") == S.FILL  # a gap: caught up from the log first
    assert p.on_live_frame() is False
