"""Bounds on client frames before anything reaches Redis, and the ping allowance's bucket.
Loop-free: frames in, ProtocolError or a frame out."""

from __future__ import annotations

import orjson
import pytest

from agentia.codes import ErrorCode, ProtocolError
from gateway import protocol as P


def _err(raw: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        P.parse_frame(raw, 16_000)
    return info.value


def _nested(depth: int, kind: str = "list") -> object:
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


@pytest.mark.parametrize("kind", ["list", "dict"])
def test_too_deep_counts_levels(kind: str) -> None:
    assert not P.too_deep(_nested(P.MAX_DEPTH, kind))
    assert P.too_deep(_nested(P.MAX_DEPTH + 1, kind))
    assert not P.too_deep("scalar") and not P.too_deep(None) and not P.too_deep([])
    assert P.too_deep([1, [2, _nested(40)], 3])  # one deep branch among shallow ones


def test_too_deep_stops_early_on_wide_values() -> None:
    wide = [[i] for i in range(10_000)] + [_nested(100)]
    assert P.too_deep(wide)
    assert not P.too_deep([[i] for i in range(10_000)])


def test_ping_depth_and_size_bounds() -> None:
    ok = P.parse_frame(orjson.dumps({"type": "ping", "data": _nested(P.MAX_DEPTH)}), 10)
    assert isinstance(ok, P.Ping)
    for depth in (P.MAX_DEPTH + 1, 300, 1000):  # 1000 parses, but orjson encodes only 255
        err = _err('{"type":"ping","data":' + "[" * depth + "]" * depth + "}")
        assert err.code is ErrorCode.BAD_FRAME and "nest" in err.message
    assert isinstance(P.parse_frame(orjson.dumps({"type": "ping", "data": "z" * 4000}), 10),
                      P.Ping)
    err = _err(orjson.dumps({"type": "ping", "data": "z" * P.MAX_PING_BYTES}))
    assert err.code is ErrorCode.BAD_FRAME and str(P.MAX_PING_BYTES) in err.message


@pytest.mark.parametrize("frame", [
    {"type": "resume", "after": P.MAX_NUMBER + 1, "id": "r"},
    {"type": "resume", "after": 10**15, "id": "r"},
    {"type": "resume", "after": 0, "epoch": "e" * (P.MAX_EPOCH + 1), "id": "r"},
    {"type": "cancel", "turn": P.MAX_NUMBER + 1, "id": "r"},
    {"type": "cancel", "turn": 10**15, "id": "r"},
    {"type": "cancel", "turn": 1.0, "id": "r"},
])
def test_numbers_and_epochs_are_bounded(frame: dict[str, object]) -> None:
    err = _err(orjson.dumps(frame))
    assert err.code is ErrorCode.BAD_FRAME and err.ref == "r"


def test_the_bounds_themselves_are_accepted() -> None:
    r = P.parse_frame(orjson.dumps({"type": "resume", "after": P.MAX_NUMBER,
                                    "epoch": "e" * P.MAX_EPOCH}), 10)
    assert r == P.Resume(P.MAX_NUMBER, "e" * P.MAX_EPOCH)
    c = P.parse_frame(orjson.dumps({"type": "cancel", "turn": P.MAX_NUMBER}), 10)
    assert c == P.Cancel(P.MAX_NUMBER)


def test_unknown_type_is_echoed_at_most_80_characters() -> None:
    err = _err(orjson.dumps({"type": "x" * 10_000, "id": "u"}))
    assert err.code is ErrorCode.BAD_FRAME and err.ref == "u"
    assert err.message.startswith("unknown frame type 'xxx") and err.message.endswith("...")
    assert len(err.message) <= len("unknown frame type ") + P.MAX_ECHO
    assert _err(b'{"type":"short"}').message == "unknown frame type 'short'"


@pytest.mark.parametrize("kind", ["[" * 1000 + "]" * 1000, '{"a":' + "[" * 1000 + "]" * 1000 + "}",
                                  "[" + ",".join(["1"] * 20_000) + "]", "12", "null"])
def test_a_type_that_is_not_a_string_is_not_echoed(kind: str) -> None:
    err = _err('{"type":' + kind + ',"id":"k"}')
    assert err.code is ErrorCode.BAD_FRAME and err.ref == "k"
    assert err.message == "unknown frame type: 'type' must be a string"


def test_ping_allowance_bucket() -> None:
    """20 per second, 40 saved up: a burst of 40, then one per 50 ms."""
    b = P.TokenBucket(20.0, 40.0)
    assert all(b.take(100.0) for _ in range(40))
    assert not b.take(100.0)
    assert b.retry_after_ms() == 50
    assert not b.take(100.04)
    assert b.take(100.051)
    assert all(b.take(1000.0) for _ in range(40)) and not b.take(1000.0)  # refills to 40 only
