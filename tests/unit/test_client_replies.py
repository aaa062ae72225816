"""The Python client's streamed reply text (docs/protocol.md, ``chunk`` and ``partial``, and
section 6 steps 2 and 6): the pure :class:`TurnText`, the tracker holding stream frames while
a resume is answered, and :meth:`AgentiaClient.stream`'s filter. No I/O."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from agentia_client import Event, Tracker, TurnText, _Waiter


def chunk(seq: int, text: str, attempt: int = 1, turn: int = 7) -> Event:
    return {"type": "chunk", "turn": turn, "attempt": attempt, "seq": seq, "text": text}


def partial(seq: int, text: str, attempt: int = 1, turn: int = 7) -> Event:
    return {"type": "partial", "turn": turn, "attempt": attempt, "seq": seq, "text": text}


def start(attempt: int = 1, offset: int = 8) -> Event:
    return {"offset": offset, "type": "turn_start", "turn": 7, "attempt": attempt}


def feed(t: TurnText, *frames: Event) -> list[bool]:
    return [t.apply(f) for f in frames]


# ---------------------------------------------------------------- TurnText


def test_chunks_in_seq_order_append_and_duplicates_or_holes_are_ignored() -> None:
    t = TurnText(7)
    assert feed(t, start(), chunk(1, "It is "), chunk(1, "It is "), chunk(3, "UTC."),
                chunk(2, "09:14 ")) == [True, True, False, False, True]
    assert (t.text, t.seq, t.attempt) == ("It is 09:14 ", 2, 1)
    assert feed(t, chunk(3, "UTC.")) == [True] and t.text == "It is 09:14 UTC."


def test_turn_start_clears_and_an_older_attempt_is_ignored() -> None:
    t = TurnText(7)
    feed(t, start(1), chunk(1, "Once"), chunk(2, " upon"))
    assert feed(t, start(2, offset=9)) == [True] and (t.text, t.seq) == ("", 0)
    assert feed(t, chunk(3, " a time"), partial(3, "Once upon a time")) == [False, False]
    assert feed(t, chunk(1, "Hello", attempt=2)) == [True] and t.text == "Hello"


def test_the_same_attempt_run_again_after_an_outage_starts_over() -> None:
    t = TurnText(7)
    feed(t, start(1), chunk(1, "Hel"), chunk(2, "lo"))
    assert feed(t, start(1, offset=9), chunk(1, "Hi")) == [True, True]
    assert (t.text, t.seq) == ("Hi", 1)


def test_a_partial_replaces_and_sets_the_count_applied() -> None:
    t = TurnText(7)
    feed(t, start(), chunk(1, "a"))
    assert feed(t, partial(3, "abc"), chunk(3, "c"), chunk(4, "d")) == [True, False, True]
    assert (t.text, t.seq) == ("abcd", 4)
    assert feed(t, partial(4, "abcd")) == [False]  # exactly what is applied


def test_joining_mid_turn_without_its_turn_start() -> None:
    t = TurnText(7)
    assert feed(t, chunk(5, "lost"), partial(4, "abcd", attempt=2), chunk(5, "e", attempt=2),
                chunk(1, "x", attempt=1)) == [False, True, True, False]
    assert (t.text, t.attempt) == ("abcde", 2)
    t = TurnText(7)
    assert feed(t, chunk(1, "first", attempt=3)) == [True] and t.attempt == 3


def test_the_ending_event_is_final() -> None:
    t = TurnText(7)
    feed(t, start(), chunk(1, "It is 09:"))
    assert feed(t, {"offset": 10, "type": "reply", "turn": 7, "text": "It is 09:14 UTC."})
    assert feed(t, chunk(2, "14 UTC."), partial(2, "x"), start(2)) == [False, False, False]
    assert t.text == "It is 09:14 UTC." and t.ended
    t = TurnText(7)
    feed(t, start(), chunk(1, "Once upon"), {"type": "cancelled", "turn": 7, "text": "Once"})
    assert t.text == "Once"
    t = TurnText(7)
    feed(t, start(), chunk(1, "So"), {"type": "turn_error", "turn": 7, "code": "turn_failed"})
    assert t.ended and not t.apply(chunk(2, "far")) and t.text == ""  # dropped: no final text


def test_bad_fields_are_ignored() -> None:
    t = TurnText(7)
    assert feed(t, {"type": "chunk", "seq": True, "text": "x"},
                {"type": "chunk", "seq": 1, "text": None},
                {"type": "partial", "seq": -1, "text": "y"},
                {"type": "tool", "name": "z"}) == [False, False, False, False]
    assert t.text == ""


# ---------------------------------------------------------------- tracker


class Streams:
    def __init__(self, stream_to_app: bool = False, max_events: int = 1000) -> None:
        self.log: list[tuple[str, Any]] = []
        self.t = Tracker(max_events,
                         on_apply=lambda e: self.log.append(("event", e["offset"])),
                         on_stream=lambda f: self.log.append((f["type"], f["seq"])),
                         stream_to_app=stream_to_app)


def test_stream_frames_pass_through_live_and_wait_for_a_resumes_events() -> None:
    s = Streams()
    s.t.start_live("e1", 7)
    s.t.on_stream(chunk(1, "a"))
    s.t.begin_resume()
    s.t.on_stream(chunk(2, "b"))          # live, on its way before the answer
    s.t.on_event(start(offset=9))        # a live event after a gap
    s.t.on_event(start(offset=8))        # the replay
    s.t.on_stream(partial(3, "abc"))     # the answer's partial, before resumed
    assert s.log == [("chunk", 1)]
    s.t.on_resumed(True, 9, "e1")
    assert s.log == [("chunk", 1), ("event", 8), ("event", 9), ("chunk", 2), ("partial", 3)]


def test_a_dropped_connection_drops_the_stream_frames_it_held() -> None:
    s = Streams()
    s.t.start_live("e1", 7)
    s.t.begin_resume()
    s.t.on_stream(chunk(1, "a"))
    s.t.end_connection()
    s.t.begin_resume()
    s.t.on_resumed(True, 7, "e1")
    assert s.log == []


def test_stream_frames_reach_the_app_queue_only_when_asked_and_not_behind() -> None:
    s = Streams()
    s.t.start_live("e1", 0)
    s.t.on_stream(chunk(1, "a"))
    assert s.t.take() is None
    s = Streams(stream_to_app=True, max_events=2)
    s.t.start_live("e1", 0)
    s.t.on_event({"offset": 1, "type": "turn_start", "turn": 1, "attempt": 1})
    s.t.on_stream(chunk(1, "a", turn=1))
    s.t.on_stream(chunk(2, "b", turn=1))   # the queue is full: not queued
    s.t.on_event({"offset": 2, "type": "tool", "turn": 1})  # not queued: the app is behind
    s.t.on_stream(chunk(3, "c", turn=1))   # nor this, until the app caught up
    got = [s.t.take(), s.t.take(), s.t.take()]
    assert [g.get("offset", g.get("seq")) if isinstance(g, dict) else g
            for g in got] == [1, 1, None]
    assert s.log[-1] == ("chunk", 3) and s.t.need_resume


def test_random_chunk_streams_assemble_the_reply() -> None:
    """Chunks duplicated and a partial injected at random points (as around a resume): the
    text is always a prefix of the reply and ends equal to it."""
    rng = random.Random(13)
    for _ in range(200):
        pieces = [rng.choice(["a", "bc", "def", " "]) for _ in range(rng.randint(1, 12))]
        t = TurnText(7)
        t.apply(start())
        seq = 0
        while seq < len(pieces):
            roll = rng.random()
            if roll < 0.2 and seq:
                t.apply(chunk(rng.randint(1, seq), pieces[0]))  # a duplicate
            elif roll < 0.35:
                n = rng.randint(seq, len(pieces))
                t.apply(partial(n, "".join(pieces[:n])))
                seq = max(seq, n) if t.seq == n else seq
            else:
                seq += 1
                t.apply(chunk(seq, pieces[seq - 1]))
            assert "".join(pieces).startswith(t.text) and t.seq <= len(pieces)
        assert t.text == "".join(pieces)


# ---------------------------------------------------------------- stream() and ask()


async def test_the_waiter_hands_stream_only_the_chunks_that_change_the_text() -> None:
    got: list[Event] = []
    texts: list[str] = []
    w = _Waiter("c", asyncio.get_running_loop().create_future(), texts.append, turn=7,
                on_event=got.append)
    w.feed(start())
    for f in (chunk(1, "a"), chunk(1, "a"), partial(3, "abc"), chunk(3, "c"), chunk(4, "d"),
              partial(4, "abcd")):
        w.feed_stream(f)
    assert [(f["type"], f.get("seq")) for f in got] == [
        ("turn_start", None), ("chunk", 1), ("partial", 3), ("chunk", 4)]
    assert texts == ["a", "abc", "abcd"]
    assert w.feed({"offset": 9, "type": "reply", "turn": 7, "text": "abcd!"})
    assert await w.future == "abcd!"
    w.feed_stream(chunk(5, "e"))
    assert len(got) == 5 and got[-1]["type"] == "reply"
