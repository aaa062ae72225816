"""Unit tests for gateway/protocol.py: pure, loop-free, time passed in as floats."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentia import PROTOCOL
from agentia.codes import RETRYABLE, AgentiaError, ErrorCode, ProtocolError
from gateway.protocol import (
    MAX_APPROVAL_MESSAGE,
    MAX_CALL_ID,
    MAX_CLIENT_ID,
    MAX_STRIKES,
    STRIKE_DECAY_S,
    Approve,
    Cancel,
    Cursor,
    Delivery,
    Ping,
    Resume,
    Send,
    Strikes,
    TokenBucket,
    ack_frame,
    error_frame,
    parse_frame,
    pong_frame,
    resumed_frame,
    welcome_frame,
)

MAX_TEXT = 100


def frame(**obj: Any) -> bytes:
    return orjson.dumps(obj)


def bad(raw: str | bytes, max_text: int = MAX_TEXT) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        parse_frame(raw, max_text)
    return info.value


# ---------------------------------------------------------------- parse_frame: valid


def test_parse_send() -> None:
    assert parse_frame(frame(type="send", id="m1", text="hello"), MAX_TEXT) == Send("m1", "hello")


def test_parse_send_accepts_str_input_and_limits_inclusive() -> None:
    cid = "x" * MAX_CLIENT_ID
    text = "y" * MAX_TEXT
    got = parse_frame(frame(type="send", id=cid, text=text).decode(), MAX_TEXT)
    assert got == Send(cid, text)


def test_parse_resume() -> None:
    assert parse_frame(frame(type="resume", after=7, epoch="e1"), MAX_TEXT) == Resume(7, "e1")
    assert parse_frame(frame(type="resume", after=0), MAX_TEXT) == Resume(0, None)


def test_parse_cancel() -> None:
    assert parse_frame(frame(type="cancel", turn=3), MAX_TEXT) == Cancel(3)
    assert parse_frame(frame(type="cancel"), MAX_TEXT) == Cancel(None)


def test_parse_ping() -> None:
    assert parse_frame(frame(type="ping", data={"n": 1}), MAX_TEXT) == Ping({"n": 1})
    assert parse_frame(frame(type="ping"), MAX_TEXT) == Ping(None)


# ---------------------------------------------------------------- parse_frame: invalid


@pytest.mark.parametrize("raw", [b"{", b"not json", b"", "{'type': 'send'}", b"\xff\xfe"])
def test_bad_json(raw: str | bytes) -> None:
    err = bad(raw)
    assert err.code is ErrorCode.BAD_JSON
    assert err.ref is None
    assert not err.retryable


@pytest.mark.parametrize("raw", [b"[]", b'"send"', b"42", b"null", b'[{"type": "send"}]'])
def test_non_object(raw: bytes) -> None:
    assert bad(raw).code is ErrorCode.BAD_FRAME


@pytest.mark.parametrize("kind", ["nope", "SEND", "", 1, None, ["send"]])
def test_unknown_type(kind: Any) -> None:
    err = bad(frame(type=kind, id="r1", text="hi"))
    assert err.code is ErrorCode.BAD_FRAME
    assert "unknown frame type" in err.message
    assert err.ref == "r1"


def test_missing_type() -> None:
    err = bad(frame(id="r2"))
    assert err.code is ErrorCode.BAD_FRAME
    assert err.ref == "r2"


def test_unknown_type_ref_only_when_id_is_a_string() -> None:
    assert bad(frame(type="nope", id=5)).ref is None
    assert bad(frame(type="nope")).ref is None


@pytest.mark.parametrize("cid", [None, "", "x" * (MAX_CLIENT_ID + 1), 12, True, ["a"]])
def test_send_bad_id(cid: Any) -> None:
    obj: dict[str, Any] = {"type": "send", "text": "hello"}
    if cid is not None:
        obj["id"] = cid
    err = bad(orjson.dumps(obj))
    assert err.code is ErrorCode.BAD_FRAME
    assert "'id'" in err.message
    assert err.ref is None


@pytest.mark.parametrize("text", ["", " ", "  \n\t ", None, 5, ["hi"]])
def test_send_empty_or_non_string_text(text: Any) -> None:
    obj: dict[str, Any] = {"type": "send", "id": "m9"}
    if text is not None:
        obj["text"] = text
    err = bad(orjson.dumps(obj))
    assert err.code is ErrorCode.BAD_FRAME
    assert "text" in err.message
    assert err.ref == "m9"


def test_send_text_too_long() -> None:
    err = bad(frame(type="send", id="m3", text="y" * (MAX_TEXT + 1)))
    assert err.code is ErrorCode.BAD_FRAME
    assert str(MAX_TEXT) in err.message
    assert err.ref == "m3"


def test_send_text_limit_counts_characters_not_bytes() -> None:
    text = "é" * MAX_TEXT  # 2 bytes each in UTF-8
    assert parse_frame(frame(type="send", id="u", text=text), MAX_TEXT) == Send("u", text)


@pytest.mark.parametrize("after", [-1, True, False, 1.5, "3", None])
def test_resume_bad_after(after: Any) -> None:
    obj: dict[str, Any] = {"type": "resume"}
    if after is not None:
        obj["after"] = after
    err = bad(orjson.dumps(obj))
    assert err.code is ErrorCode.BAD_FRAME
    assert "after" in err.message


@pytest.mark.parametrize("epoch", [1, True, ["e"], {"e": 1}])
def test_resume_epoch_must_be_string(epoch: Any) -> None:
    err = bad(frame(type="resume", after=1, epoch=epoch))
    assert err.code is ErrorCode.BAD_FRAME
    assert "epoch" in err.message


@pytest.mark.parametrize("turn", [0, -2, True, False, 1.0, "1"])
def test_cancel_bad_turn(turn: Any) -> None:
    err = bad(frame(type="cancel", turn=turn))
    assert err.code is ErrorCode.BAD_FRAME
    assert "turn" in err.message


def test_parse_approve() -> None:
    assert parse_frame(frame(type="approve", id="a", call_id="call_1", approved=True),
                       MAX_TEXT) == Approve("a", "call_1", True)
    long = "x" * MAX_APPROVAL_MESSAGE
    assert parse_frame(frame(type="approve", id="a", call_id="c" * MAX_CALL_ID, approved=False,
                             message=long), MAX_TEXT) == Approve("a", "c" * MAX_CALL_ID, False,
                                                                 long)
    assert parse_frame(frame(type="approve", id="a", call_id="c", approved=False,
                             message=None), MAX_TEXT) == Approve("a", "c", False)


@pytest.mark.parametrize(("fields", "word"), [
    ({"call_id": "c", "approved": True}, "'id'"),
    ({"id": "", "call_id": "c", "approved": True}, "'id'"),
    ({"id": "i" * (MAX_CLIENT_ID + 1), "call_id": "c", "approved": True}, "'id'"),
    ({"id": "a", "approved": True}, "call_id"),
    ({"id": "a", "call_id": "", "approved": True}, "call_id"),
    ({"id": "a", "call_id": 7, "approved": True}, "call_id"),
    ({"id": "a", "call_id": "c" * (MAX_CALL_ID + 1), "approved": True}, "call_id"),
    ({"id": "a", "call_id": "c"}, "approved"),
    ({"id": "a", "call_id": "c", "approved": 1}, "approved"),
    ({"id": "a", "call_id": "c", "approved": "yes"}, "approved"),
    ({"id": "a", "call_id": "c", "approved": True, "message": 5}, "message"),
    ({"id": "a", "call_id": "c", "approved": False,
      "message": "m" * (MAX_APPROVAL_MESSAGE + 1)}, "message"),
])
def test_approve_bad_fields(fields: dict[str, Any], word: str) -> None:
    err = bad(frame(type="approve", **fields))
    assert err.code is ErrorCode.BAD_FRAME
    assert word in err.message
    # an error about a frame with a usable id refers to it
    assert err.ref == (fields["id"] if word != "'id'" else None)


# ---------------------------------------------------------------- server frames


def test_welcome_frame_round_trip() -> None:
    limits = {"max_text_chars": 10, "rate_per_s": 2.5}
    got = orjson.loads(welcome_frame(node="n1", session="s1", epoch="ep", offset=4,
                                     limits=limits))
    assert got == {"type": "welcome", "protocol": PROTOCOL, "node": "n1", "session": "s1",
                   "epoch": "ep", "offset": 4, "limits": limits}


def test_ack_frame_round_trip() -> None:
    assert orjson.loads(ack_frame("m1", 3, False)) == {
        "type": "ack", "id": "m1", "offset": 3, "duplicate": False}
    assert orjson.loads(ack_frame("m1", 3, True))["duplicate"] is True


def test_resumed_frame_round_trip() -> None:
    assert orjson.loads(resumed_frame(True, 9, "ep")) == {
        "type": "resumed", "recovered": True, "offset": 9, "epoch": "ep", "solicited": True}
    assert orjson.loads(resumed_frame(False, 9, "ep", solicited=False))["solicited"] is False
    assert orjson.loads(resumed_frame(False, 3, "e2", "r1")) == {
        "type": "resumed", "recovered": False, "offset": 3, "epoch": "e2", "solicited": True,
        "id": "r1"}
    assert orjson.loads(resumed_frame(False, 0, "e2"))["recovered"] is False


@pytest.mark.parametrize("data", [None, 1, "x", {"a": [1, 2]}, [True, None]])
def test_pong_frame_echoes_data(data: Any) -> None:
    assert orjson.loads(pong_frame(data)) == {"type": "pong", "data": data}


def test_frames_are_str() -> None:
    assert isinstance(pong_frame(1), str)
    assert isinstance(ack_frame("a", 1, False), str)


@pytest.mark.parametrize("code", list(ErrorCode))
def test_error_frame_retryable_follows_codes(code: ErrorCode) -> None:
    got = orjson.loads(error_frame(AgentiaError(code, "boom", "r7")))
    assert got == {"type": "error", "code": code.value, "message": "boom",
                   "retryable": code in RETRYABLE, "ref": "r7"}
    assert "retry_after_ms" not in got


def test_error_frame_retry_after_only_when_set() -> None:
    with_retry = orjson.loads(error_frame(AgentiaError(ErrorCode.RATE_LIMITED, "slow", None, 250)))
    assert with_retry["retry_after_ms"] == 250
    assert with_retry["retryable"] is True
    assert with_retry["ref"] is None
    without = orjson.loads(error_frame(AgentiaError(ErrorCode.RATE_LIMITED, "slow")))
    assert "retry_after_ms" not in without


def test_error_frame_from_parse_error() -> None:
    err = bad(frame(type="send", id="m5", text=" "))
    got = orjson.loads(error_frame(err))
    assert got["code"] == "bad_frame"
    assert got["ref"] == "m5"
    assert got["retryable"] is False


# ---------------------------------------------------------------- TokenBucket


def test_bucket_burst_then_refusal() -> None:
    b = TokenBucket(rate=1.0, burst=3.0)
    assert [b.take(10.0) for _ in range(3)] == [True, True, True]
    assert b.take(10.0) is False
    assert b.take(10.0) is False


def test_bucket_refills_over_time() -> None:
    b = TokenBucket(rate=2.0, burst=2.0)
    assert b.take(0.0) and b.take(0.0)
    assert not b.take(0.1)  # 0.2 tokens so far
    assert b.take(0.5)  # 1.0 token after 0.5 s at 2/s
    assert not b.take(0.5)


def test_bucket_never_saves_more_than_burst() -> None:
    b = TokenBucket(rate=10.0, burst=2.0)
    assert b.take(0.0)
    results = [b.take(1000.0) for _ in range(3)]
    assert results == [True, True, False]


def test_bucket_retry_after_ms_positive_and_sensible() -> None:
    b = TokenBucket(rate=4.0, burst=1.0)
    assert b.take(5.0)
    assert not b.take(5.0)
    ms = b.retry_after_ms()
    assert 0 < ms <= 250
    assert not b.take(5.0 + (ms / 2) / 1000)
    assert b.retry_after_ms() >= 1


@pytest.mark.parametrize("rate", [3.0, 7.0, 6.0, 0.3])
def test_bucket_waiting_retry_after_ms_is_enough(rate: float) -> None:
    b = TokenBucket(rate=rate, burst=1.0)
    assert b.take(100.0)
    assert not b.take(100.0)
    ms = b.retry_after_ms()
    assert b.take(100.0 + ms / 1000)


# ---------------------------------------------------------------- Cursor


def test_cursor_sends_in_order() -> None:
    c = Cursor(sent=0)
    assert [c.on_live(o) for o in (1, 2, 3)] == [Delivery.SEND] * 3
    assert c.sent == 3 and c.seen == 3
    assert not c.catching_up


def test_cursor_starts_from_given_offset() -> None:
    c = Cursor(sent=10)
    assert c.on_live(10) is Delivery.DROP
    assert c.on_live(11) is Delivery.SEND
    assert c.sent == 11


def test_cursor_drops_duplicates_and_old() -> None:
    c = Cursor(sent=5)
    assert c.on_live(6) is Delivery.SEND
    assert c.on_live(6) is Delivery.DROP
    assert c.on_live(2) is Delivery.DROP
    assert c.sent == 6


def test_cursor_gap_starts_catch_up_then_defers() -> None:
    c = Cursor(sent=2)
    assert c.on_live(5) is Delivery.CATCH_UP
    assert c.catching_up
    assert c.sent == 2  # nothing written for the gap yet
    assert c.seen == 5
    assert c.on_live(6) is Delivery.DEFER
    assert c.on_live(3) is Delivery.DEFER
    assert c.seen == 6


def test_cursor_on_replayed() -> None:
    c = Cursor(sent=2)
    assert c.on_live(4) is Delivery.CATCH_UP
    assert c.on_replayed(2) is False
    assert c.on_replayed(3) is True
    assert c.on_replayed(3) is False
    assert c.on_replayed(4) is True
    assert c.sent == 4
    assert c.on_replayed(7) is True  # the log may know more than the live stream showed
    assert c.seen == 7


def test_finish_catch_up_false_when_nothing_new() -> None:
    c = Cursor(sent=2)
    assert c.on_live(4) is Delivery.CATCH_UP
    c.on_replayed(3)
    c.on_replayed(4)
    assert c.finish_catch_up() is False
    assert not c.catching_up
    assert c.on_live(5) is Delivery.SEND


def test_finish_catch_up_true_when_events_arrived_meanwhile() -> None:
    c = Cursor(sent=2)
    assert c.on_live(4) is Delivery.CATCH_UP
    c.on_replayed(3)
    c.on_replayed(4)
    assert c.on_live(5) is Delivery.DEFER  # arrived after the log was read
    assert c.finish_catch_up() is True
    assert c.catching_up  # another pass is needed
    assert c.on_replayed(5) is True
    assert c.finish_catch_up() is False
    assert not c.catching_up
    assert c.on_live(5) is Delivery.DROP
    assert c.on_live(6) is Delivery.SEND


def test_finish_catch_up_false_when_deferred_event_was_replayed() -> None:
    c = Cursor(sent=0)
    assert c.on_live(2) is Delivery.CATCH_UP
    assert c.on_live(3) is Delivery.DEFER
    for o in (1, 2, 3):
        assert c.on_replayed(o)
    assert c.finish_catch_up() is False


def test_start_catch_up() -> None:
    c = Cursor(sent=0)
    c.start_catch_up(7)
    assert c.catching_up
    assert c.sent == 7
    assert c.on_live(8) is Delivery.DEFER
    assert c.on_replayed(7) is False
    assert c.finish_catch_up() is True  # 8 was seen but not yet replayed
    assert c.on_replayed(8) is True
    assert c.finish_catch_up() is False
    assert c.on_live(9) is Delivery.SEND


def test_start_catch_up_with_nothing_seen_finishes() -> None:
    c = Cursor(sent=3)
    c.start_catch_up(3)
    assert c.finish_catch_up() is False
    assert not c.catching_up


# ---------------------------------------------------------------- Strikes


def test_strikes_flood_after_max_quick_hits() -> None:
    s = Strikes()
    now = 500.0
    assert not any(s.hit(now) for _ in range(MAX_STRIKES))
    assert s.hit(now) is True


def test_strikes_decay_prevents_flood() -> None:
    s = Strikes()
    now = 500.0
    for _ in range(MAX_STRIKES * 10):
        assert s.hit(now) is False
        now += STRIKE_DECAY_S
    assert s.count == pytest.approx(1.0)


def test_strikes_partial_decay() -> None:
    s = Strikes()
    for _ in range(MAX_STRIKES):
        assert not s.hit(100.0)
    # after two decay periods two strikes are forgiven: two more fit, the third floods
    now = 100.0 + 2 * STRIKE_DECAY_S
    assert not s.hit(now)
    assert not s.hit(now)
    assert s.hit(now)


def test_cursor_falls_behind_an_event_it_could_not_queue() -> None:
    c = Cursor(sent=5)
    assert c.on_live(6) is Delivery.SEND
    c.fell_behind(6)  # over the send budget: left to the log
    assert c.sent == 5 and c.seen == 6 and c.catching_up
    assert c.on_live(7) is Delivery.DEFER  # the fill covers it
    assert c.on_replayed(6) and c.on_replayed(7) and not c.on_replayed(7)
    assert not c.finish_catch_up() and not c.catching_up
