"""The client SDK's pure parts: resume/dedupe tracker, backoff, close codes, URLs, turns."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from agentia_client import (
    Backoff,
    Event,
    Limits,
    RequestError,
    Reset,
    Tracker,
    TurnCancelled,
    TurnFailed,
    _Bucket,
    _Waiter,
    close_action,
    session_url,
)


def ev(offset: int, kind: str = "tool", **extra: Any) -> Event:
    return {"offset": offset, "type": kind, "turn": 1, "text": str(offset), **extra}


class Recorder:
    def __init__(self, max_events: int = 1000) -> None:
        self.applied: list[int] = []
        self.resets: list[Reset] = []
        self.t = Tracker(max_events, on_apply=lambda e: self.applied.append(e["offset"]),
                         on_reset=self.resets.append)

    def drain(self) -> list[Event | Reset]:
        out: list[Event | Reset] = []
        while (item := self.t.take()) is not None:
            out.append(item)
        return out


def offsets(items: list[Event | Reset]) -> list[int | str]:
    return [i["offset"] if isinstance(i, dict) else "reset" for i in items]


# ---------------------------------------------------------------- tracker


def test_live_events_are_applied_once_in_order() -> None:
    r = Recorder()
    r.t.start_live("e1", 5)
    for o in (6, 7, 7, 6, 3, 8):
        r.t.on_event(ev(o))
    assert r.applied == [6, 7, 8]
    assert offsets(r.drain()) == [6, 7, 8]
    assert not r.t.need_resume and r.t.resume_args() == (8, "e1")


def test_a_gap_asks_for_a_resume_and_is_not_applied() -> None:
    r = Recorder()
    r.t.start_live("e1", 5)
    r.t.on_event(ev(8))
    assert r.applied == [] and r.t.need_resume and r.t.resume_args() == (5, "e1")


def test_resume_buffers_and_sorts_live_and_replayed_events() -> None:
    r = Recorder()
    r.t.start_live("e1", 5)
    r.t.begin_resume()
    for o in (9, 8, 6, 7, 8, 9):  # live events already on their way, then the replay
        r.t.on_event(ev(o))
    assert r.applied == []  # nothing before resumed
    assert r.t.on_resumed(True, 9, "e1") is None
    assert r.applied == [6, 7, 8, 9] and offsets(r.drain()) == [6, 7, 8, 9]
    assert not r.t.need_resume and not r.t.buffering


def test_interim_transcripts_go_to_the_app_live_only_never_during_a_resume() -> None:
    t = Tracker(10, stream_to_app=True)
    t.start_live("e1", 0)
    cap = {"type": "transcript", "final": False, "text": "wh", "utterance": "u1"}
    t.on_caption(cap)
    assert t.take() == cap
    t.begin_resume()
    t.on_caption({**cap, "text": "what"})  # the final one comes from the log instead
    t.on_event(ev(1, "transcript", final=True))
    t.on_resumed(True, 1, "e1")
    assert [i["text"] for i in iter(t.take, None) if isinstance(i, dict)] == ["1"]
    quiet = Tracker(10)  # without stream_to_app: log events only
    quiet.start_live("e1", 0)
    quiet.on_caption(cap)
    assert quiet.take() is None


def test_unrecovered_resume_is_a_reset_then_a_rebuild() -> None:
    r = Recorder()
    r.t.start_live("old", 30)
    r.t.on_event(ev(31))
    r.t.begin_resume()
    for o in (1, 2, 3):  # a new epoch: offsets restarted
        r.t.on_event(ev(o))
    reset = r.t.on_resumed(False, 3, "new")
    assert reset == Reset("new", 3, "old", requested=True) and reset.epoch_changed
    assert r.resets == [reset]
    assert offsets(r.drain()) == [31, "reset", 1, 2, 3]
    assert r.t.resume_args() == (3, "new")


def test_unrecovered_resume_of_a_trimmed_log_starts_at_its_oldest_entry() -> None:
    r = Recorder()
    r.t.start_live("e1", 5)
    r.t.begin_resume()
    for o in range(21, 31):
        r.t.on_event(ev(o))
    reset = r.t.on_resumed(False, 30, "e1")
    assert reset is not None and not reset.epoch_changed
    assert offsets(r.drain()) == ["reset", *range(21, 31)]
    assert not r.t.need_resume


def test_unrecovered_resume_without_events_jumps_to_the_offset() -> None:
    r = Recorder()
    r.t.start_live("e1", 50)
    r.t.begin_resume()
    r.t.on_resumed(False, 7, "e2")
    assert r.t.last == 7 and offsets(r.drain()) == ["reset"]


def test_unrequested_reset() -> None:
    r = Recorder()
    r.t.start_live("e1", 10)
    reset = r.t.on_unrequested_reset(0, "e2")
    assert not reset.requested and reset.previous_epoch == "e1"
    r.t.on_event(ev(1))
    assert offsets(r.drain()) == ["reset", 1]


def test_consecutive_resets_are_coalesced_and_never_dropped() -> None:
    r = Recorder(max_events=2)
    r.t.start_live("e1", 0)
    for o in (1, 2, 3):
        r.t.on_event(ev(o))
    r.t.on_unrequested_reset(0, "e2")
    r.t.on_unrequested_reset(0, "e3")
    items = r.drain()
    assert offsets(items) == [1, 2, "reset"]  # past max_events, and only the latest
    assert isinstance(items[-1], Reset) and items[-1].epoch == "e3"


def test_a_full_queue_is_refilled_from_the_log_later() -> None:
    r = Recorder(max_events=4)
    r.t.start_live("e1", 0)
    for o in range(1, 11):
        r.t.on_event(ev(o))
    assert r.applied == list(range(1, 11))  # turns and acks are not held up
    assert len(r.t.queue) == 4 and r.t.app_next == 5 and not r.t.need_resume
    got = [r.t.take(), r.t.take()]
    assert r.t.need_resume and r.t.resume_args() == (4, "e1")
    r.t.begin_resume()
    for o in range(5, 11):
        r.t.on_event(ev(o))
    r.t.on_resumed(True, 10, "e1")
    assert r.applied == list(range(1, 11))  # not applied twice
    got += r.drain()
    assert offsets(got) == [1, 2, 3, 4, 5, 6] and r.t.need_resume  # 7.. did not fit


def test_a_resume_buffer_overflow_asks_again() -> None:
    r = Recorder(max_events=2000)
    r.t.start_live("e1", 0)
    r.t.begin_resume()
    for o in range(1, 2501):
        r.t.on_event(ev(o))
    r.t.on_resumed(True, 2500, "e1")
    assert r.t.last == 2000 and r.t.need_resume and r.t.resume_args() == (2000, "e1")


def test_start_at_a_saved_position_resumes_from_it() -> None:
    r = Recorder()
    r.t.start_at(17, "e1")
    assert r.t.need_resume and r.t.resume_args() == (17, "e1")
    assert r.t.in_sync_with("e1", 17) and not r.t.in_sync_with("e2", 17)


@pytest.mark.parametrize("seed", range(30))
def test_random_reconnects_duplicates_and_slow_reader_deliver_everything_once(
        seed: int) -> None:
    """A simulated edge: a growing log, live delivery, stale duplicates, reconnects and
    resumes at random moments, and a reader slower than the events."""
    rng = random.Random(seed)
    n = 300
    r = Recorder(max_events=rng.choice([2, 5, 50]))
    r.t.start_live("e", 0)
    produced = sent = 0
    consumed: list[Event | Reset] = []

    def resume() -> None:
        nonlocal sent
        after, epoch = r.t.resume_args()
        assert epoch == "e"
        r.t.begin_resume()
        for _ in range(rng.randint(0, 3)):  # live events already on their way
            if sent < produced:
                sent += 1
                r.t.on_event(ev(sent))
        for o in range(after + 1, produced + 1):
            r.t.on_event(ev(o))
        sent = produced
        r.t.on_resumed(True, produced, "e")

    for _ in range(100_000):
        if len(consumed) == n:
            break
        x = rng.random()
        if x < 0.3 and produced < n:
            produced += 1
        elif x < 0.6 and sent < produced:
            sent += 1
            r.t.on_event(ev(sent))
        elif x < 0.65 and sent:
            r.t.on_event(ev(rng.randint(1, sent)))  # a stale duplicate
        elif x < 0.9:
            item = r.t.take()
            if item is not None:
                consumed.append(item)
        elif x < 0.93:
            r.t.end_connection()  # reconnect
            if not r.t.in_sync_with("e", produced):
                resume()
        if r.t.need_resume and not r.t.buffering:
            resume()
    assert offsets(consumed) == list(range(1, n + 1))
    assert r.applied == list(range(1, n + 1))


# ---------------------------------------------------------------- small parts


def test_backoff_is_exponential_capped_and_jittered() -> None:
    b = Backoff(base=0.5, cap=8.0, jitter=0.5)
    assert [b.delay(n, rand=lambda: 0.0) for n in range(6)] == [0.5, 1, 2, 4, 8, 8]
    assert b.delay(0, rand=lambda: 1.0) == 0.25
    assert all(0.25 <= b.delay(0) <= 0.5 for _ in range(100))
    assert b.delay(10_000, rand=lambda: 0.0) == 8.0
    with pytest.raises(ValueError):
        Backoff(base=0)
    with pytest.raises(ValueError):
        Backoff(max_attempts=0)


@pytest.mark.parametrize(("code", "action"), [
    (None, "reconnect"), (1000, "reconnect"), (1001, "reconnect"), (1006, "reconnect"),
    (1009, "reconnect"), (1011, "reconnect"), (1012, "reconnect"), (4000, "reconnect"),
    (4003, "reconnect"), (4499, "reconnect"), (4500, "stop"), (4999, "stop"),
    (1002, "stop"), (1008, "stop"),
])
def test_close_codes(code: int | None, action: str) -> None:
    assert close_action(code) == action


def test_session_url() -> None:
    assert session_url("ws://h:1", "s-1") == "ws://h:1/v1/ws?session=s-1"
    assert session_url("ws://h:1/", None) == "ws://h:1/v1/ws"
    assert (session_url("wss://h/v1/ws?x=1&session=old", "new")
            == "wss://h/v1/ws?x=1&session=new")


def test_bucket_mirrors_the_edge() -> None:
    b = _Bucket(rate=2.0, burst=2.0)
    assert b.wait(0.0) == 0.0
    b.take(0.0)
    b.take(0.0)
    assert b.wait(0.0) == pytest.approx(0.5)
    assert b.wait(0.5) == 0.0
    b.empty(0.5)
    assert b.wait(0.5) == pytest.approx(0.5)


def test_limits_and_errors_from_frames() -> None:
    assert Limits.from_welcome({"heartbeat_s": 2, "burst": "x", "rate_per_s": -1}) == Limits(
        heartbeat_s=2.0)
    assert Limits.from_welcome(None) == Limits()
    err = RequestError.from_frame({"type": "error", "code": "rate_limited", "message": "m",
                                   "retryable": True, "ref": "a", "retry_after_ms": 200})
    assert (err.code, err.retryable, err.ref, err.retry_after_ms) == ("rate_limited", True,
                                                                     "a", 200)


async def test_waiter_restarts_the_text_on_a_new_attempt() -> None:
    seen: list[str] = []
    w = _Waiter("c", asyncio.get_running_loop().create_future(), seen.append, turn=4)

    def chunk(attempt: int, seq: int, text: str) -> Event:
        return {"type": "chunk", "turn": 4, "attempt": attempt, "seq": seq, "text": text}

    assert not w.feed({"type": "turn_start", "attempt": 1})
    w.feed_stream(chunk(1, 1, "Hel"))
    assert not w.feed({"type": "turn_start", "attempt": 2})
    assert not w.feed({"type": "tool", "name": "x"})
    w.feed_stream(chunk(1, 2, "lo"))  # the failed attempt's straggler: ignored
    w.feed_stream(chunk(2, 1, "Hello"))
    assert seen == ["Hel", "", "Hello"]
    assert w.feed({"type": "reply", "text": "Hello"}) and await w.future == "Hello"


async def test_waiter_outcomes() -> None:
    loop = asyncio.get_running_loop()
    w = _Waiter("c", loop.create_future(), None, turn=4)
    assert w.feed({"type": "cancelled", "text": "par"})
    with pytest.raises(TurnCancelled) as cancelled:
        await w.future
    assert cancelled.value.text == "par" and cancelled.value.turn == 4
    w = _Waiter("c", loop.create_future(), None, turn=5)
    assert w.feed({"type": "turn_error", "code": "turn_timeout", "message": "slow"})
    with pytest.raises(TurnFailed) as failed:
        await w.future
    assert failed.value.code == "turn_timeout"
