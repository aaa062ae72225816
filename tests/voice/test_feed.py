"""TurnFeed (what to say for one turn, from its events), the bridge's tool notice (live events
fed by hand) and the job metadata: no I/O."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import jwt
import pytest

from voice.bridge import VoiceBridge
from voice.settings import VoiceSettings
from voice.tokens import job_metadata, parse_job_metadata, room_token
from voice.turn_feed import FAILED_TEXT, TOOL_NOTICE, TurnFeed


def said(feed: TurnFeed, *events: dict[str, Any]) -> list[str]:
    return [s for e in events if (s := feed.on_event(e))]


def chunk(turn: int, seq: int, text: str, attempt: int = 1) -> dict[str, Any]:
    return {"type": "chunk", "turn": turn, "attempt": attempt, "seq": seq, "text": text}


def test_chunks_are_spoken_as_they_come_and_reply_ends_the_turn() -> None:
    f = TurnFeed(7)
    out = said(f, {"type": "turn_start", "turn": 7, "attempt": 1},
               chunk(7, 1, "It is "),
               {"type": "tool_call", "turn": 7, "call_id": "c1", "name": "current_time",
                "arguments": {}, "agent": "demo"},
               chunk(7, 1, "It is "),  # a duplicate
               chunk(7, 2, "noon."),
               {"type": "reply", "turn": 7, "text": "It is noon."})
    assert out == ["It is ", "noon."] and f.done


def tool(kind: str, call_id: str) -> dict[str, Any]:
    return {"type": kind, "turn": 7, "call_id": call_id, "name": "slow_lookup"}


def test_a_slow_tool_gets_one_notice_per_wait() -> None:
    f = TurnFeed(7)
    assert f.notice_in(0.0, 1.5) is None  # no tool running
    f.on_event(tool("tool_call", "a"), now=10.0)
    f.on_event(tool("tool_call", "b"), now=10.5)  # the wait started with the first call
    assert f.notice_in(10.5, 1.5) == pytest.approx(1.0)
    assert f.notice_in(12.0, 1.5) == 0.0
    assert f.notice_in(12.0, 0) is None  # notices off
    assert f.notice() == TOOL_NOTICE
    assert f.notice_in(13.0, 1.5) is None  # said once
    f.on_event(tool("tool_result", "a"), now=13.0)
    assert f.notice_in(13.0, 1.5) is None
    f.on_event(tool("tool_result", "b"), now=13.1)
    f.on_event(tool("tool_call", "c"), now=20.0)  # a new wait: a new notice
    assert f.notice_in(20.0, 1.5) == pytest.approx(1.5)
    f.on_event(tool("tool_result", "c"), now=20.2)
    assert f.notice_in(30.0, 1.5) is None  # a fast tool: nothing said
    assert said(f, {"type": "reply", "turn": 7, "text": "Done."}) == ["Done."]


def test_reply_fills_in_text_no_chunk_carried() -> None:
    f = TurnFeed(7)
    assert said(f, chunk(7, 1, "It is"), chunk(7, 3, " lost"),
                {"type": "reply", "turn": 7, "text": "It is noon."}) == ["It is", " noon."]


def test_a_partial_brings_what_chunks_out_of_order_missed() -> None:
    f = TurnFeed(7)
    assert said(f, chunk(7, 1, "One "), chunk(7, 3, "three "),
                {"type": "partial", "turn": 7, "attempt": 1, "seq": 3, "text": "One two three "},
                chunk(7, 4, "four")) == ["One ", "two three ", "four"]


def test_other_turns_and_events_after_the_end_are_ignored() -> None:
    f = TurnFeed(7)
    assert said(f, chunk(8, 1, "other"),
                {"type": "user", "id": "x", "text": "hi"},
                {"type": "reply", "turn": 7, "text": "done"},
                chunk(7, 1, "late")) == ["done"]


def test_a_retried_attempt_does_not_repeat_what_was_spoken() -> None:
    f = TurnFeed(3)
    out = said(f, {"type": "turn_start", "turn": 3, "attempt": 1},
               chunk(3, 1, "One two "),
               {"type": "turn_start", "turn": 3, "attempt": 2},
               chunk(3, 2, "stale", attempt=1),
               chunk(3, 1, "One two three", attempt=2),
               {"type": "reply", "turn": 3, "text": "One two three four"})
    assert out == ["One two ", "three", " four"]


@pytest.mark.parametrize(("kind", "expected"), [("cancelled", []), ("turn_error", [FAILED_TEXT])])
def test_cancel_is_silent_and_failure_is_announced(kind: str, expected: list[str]) -> None:
    f = TurnFeed(1)
    assert said(f, {"type": kind, "turn": 1, "text": "", "code": "turn_failed"}) == expected
    assert f.done


def test_job_metadata_round_trip_and_refusals() -> None:
    assert parse_job_metadata(job_metadata("s-1", "alice")) == ("s-1", "alice")
    for bad in ["", "[]", '{"session": "a b", "user": "u"}', '{"session": "s"}',
                '{"session": "s", "user": ""}', "not json"]:
        with pytest.raises(ValueError):
            parse_job_metadata(bad)


def test_room_token_grants_one_room_only() -> None:
    s = VoiceSettings(livekit_api_key="k", livekit_api_secret="s" * 32)
    claims = jwt.decode(room_token(s, "agentia-call-x", "alice"), "s" * 32, algorithms=["HS256"])
    assert claims["sub"] == "alice" and claims["iss"] == "k"
    video = claims["video"]
    assert video["room"] == "agentia-call-x" and video["roomJoin"] is True
    assert not video.get("roomAdmin") and not video.get("roomCreate")


def test_the_load_reported_is_the_share_of_calls_taken() -> None:
    from types import SimpleNamespace

    from voice.worker import options

    opts = options(VoiceSettings(voice_max_calls=4))
    assert opts.load_threshold == 1.0
    assert opts.load_fnc(SimpleNamespace(active_jobs=[1, 2])) == 0.5
    assert opts.load_fnc(SimpleNamespace(active_jobs=[1] * 9)) == 1.0
    assert options(VoiceSettings()).load_threshold == 0.75  # the machine's CPU, as before


class _QuietLog:
    """A bus whose log has nothing to replay and no partial text (the events come live)."""

    def __init__(self) -> None:
        self.read = asyncio.Event()
        """Set when a turn's reader looked at the log (its live listener is in place)."""

    async def replay(self, sid: str, after: int, epoch: str | None, limit: int) -> Any:
        self.read.set()
        return SimpleNamespace(events=[])

    async def partial(self, sid: str) -> None:
        return None


async def test_the_bridge_says_one_moment_while_a_slow_tool_runs() -> None:
    log = _QuietLog()
    bridge = VoiceBridge(log, "s", "alice", tool_notice_s=0.05)  # type: ignore[arg-type]

    async def agent(tool_s: float) -> None:
        await log.read.wait()
        log.read.clear()
        live = bridge._turns[7]
        live.put(8, tool("tool_call", "a"))
        await asyncio.sleep(tool_s)
        live.put(9, tool("tool_result", "a"))
        live.put(10, {"type": "reply", "turn": 7, "text": "Done."})

    for tool_s, want in ((0.3, [TOOL_NOTICE, "Done."]), (0.0, ["Done."])):
        running = asyncio.create_task(agent(tool_s))
        assert [t async for t in bridge.follow(7)] == want
        await running
