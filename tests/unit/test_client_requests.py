"""The SDK's I/O-free pieces behind AgentiaClient.send/cancel/approve and stream(): requests
made from the caller's arguments (agentia_client/pending.py) and the feed of one turn's
events (agentia_client/streaming.py). No event loop, no socket."""

from __future__ import annotations

import pytest

from agentia_client import (
    MAX_CLIENT_ID,
    Chunk,
    Limits,
    Partial,
    Reply,
    RequestError,
    ToolCall,
    TurnStart,
    UserMessage,
)
from agentia_client.pending import (
    MAX_APPROVE_MESSAGE,
    _approve_request,
    _cancel_request,
    _send_request,
)
from agentia_client.streaming import _TurnFeed


def test_a_send_gets_an_id_or_keeps_the_callers_checked() -> None:
    a, b = _send_request("hi", None, None), _send_request("hi", None, None)
    assert a.kind == "send" and a.id != b.id and a.future is None
    assert _send_request("hi", "mine", None).frame() == {"type": "send", "id": "mine",
                                                        "text": "hi"}
    for bad in ("", "x" * (MAX_CLIENT_ID + 1)):
        with pytest.raises(ValueError, match="id must be"):
            _send_request("hi", bad, None)
    with pytest.raises(ValueError, match="empty"):
        _send_request(" \n", None, None)


def test_a_send_over_the_edges_limits_is_refused_here() -> None:
    limits = Limits.from_welcome({"max_text_chars": 5})
    _send_request("12345", None, limits)
    with pytest.raises(RequestError) as err:
        _send_request("123456", "r1", limits)
    assert err.value.code == "bad_frame" and err.value.ref == "r1"
    _send_request("123456", None, None)  # not connected: the edge's limits are not known


def test_cancel_and_approve_requests() -> None:
    assert _cancel_request(None).frame() == {"type": "cancel", "turn": None}
    assert _cancel_request(3).frame() == {"type": "cancel", "turn": 3}
    with pytest.raises(ValueError):
        _cancel_request(0)
    req = _approve_request("c1", False, "no", "a1")
    assert req.frame() == {"type": "approve", "id": "a1", "call_id": "c1",
                           "approved": False, "message": "no"}
    assert "message" not in _approve_request("c1", True, None, None).frame()
    for args in (("", True), ("c1", "yes")):
        with pytest.raises(ValueError):
            _approve_request(args[0], args[1], None, None)  # type: ignore[arg-type]
    with pytest.raises(RequestError) as err:
        _approve_request("c1", True, "m" * (MAX_APPROVE_MESSAGE + 1), None)
    assert err.value.code == "bad_frame"


def test_a_turn_feed_yields_typed_events_once_until_the_end() -> None:
    feed = _TurnFeed()
    assert feed.take() is None
    frames = [
        {"type": "user", "offset": 5, "id": "c", "text": "hi"},
        {"type": "turn_start", "offset": 6, "turn": 5, "attempt": 1},
        {"type": "chunk", "turn": 5, "attempt": 1, "seq": 1, "text": "he"},
        {"type": "user", "offset": 5, "id": "c", "text": "hi"},  # replayed after a gap
        {"type": "session_note", "offset": 7},  # not one of a turn's events
        {"type": "partial", "turn": 5, "attempt": 1, "seq": 1, "text": "he"},
        {"type": "tool_call", "offset": 8, "turn": 5, "call_id": "t", "name": "f",
         "arguments": "{}"},
        {"type": "reply", "offset": 9, "turn": 5, "text": "hello"},
        {"type": "reply", "offset": 10, "turn": 5, "text": "after the end"},
    ]
    for f in frames:
        feed.push(f)
    got = []
    while (ev := feed.take()) is not None:
        got.append(ev)
    assert [type(e) for e in got] == [UserMessage, TurnStart, Chunk, Partial, ToolCall, Reply]
    assert feed.ended and isinstance(got[-1], Reply) and got[-1].offset == 9
    assert feed.take() is None  # nothing after the event that ends the turn
