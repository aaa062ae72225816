"""The Python client's typed frames and events (agentia_client.events) against the examples
of docs/protocol.md, sections 4 and 5: every documented type parses to its class with the
documented field values; unknown types and bad fields do not raise. (The agent's events in
detail: tests/unit/test_client_agent.py.)"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from agentia_client import (
    Ack,
    AgentState,
    ApprovalRequest,
    ApprovalResult,
    CallState,
    Cancelled,
    Cancelling,
    Chunk,
    ErrorFrame,
    Handoff,
    Limits,
    Partial,
    Pong,
    PostedMessage,
    Presence,
    Reply,
    Resumed,
    Takeover,
    ToolCall,
    ToolResult,
    Transcript,
    TurnFailure,
    TurnStart,
    UnknownEvent,
    UserMessage,
    Welcome,
    parse_event,
    parse_frame,
    parse_stream,
)

PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
CLASSES: dict[str, type] = {
    "welcome": Welcome, "ack": Ack, "resumed": Resumed, "cancelling": Cancelling,
    "pong": Pong, "error": ErrorFrame, "user": UserMessage, "turn_start": TurnStart,
    "chunk": Chunk, "partial": Partial, "tool_call": ToolCall, "tool_result": ToolResult,
    "state": AgentState, "handoff": Handoff, "approval_request": ApprovalRequest,
    "approval_result": ApprovalResult, "reply": Reply, "cancelled": Cancelled,
    "turn_error": TurnFailure, "call": CallState, "message": PostedMessage,
    "transcript": Transcript, "takeover": Takeover, "presence": Presence,
    "tool": ToolCall,  # the event of earlier revisions, replaced by tool_call
}
UNTYPED: set[str] = set()
"""Documented types this client revision has no class for: they must parse to UnknownEvent
(none today)."""


def documented_frames() -> list[dict[str, Any]]:
    """Every JSON object in the ```json blocks of sections 4 and 5 that has a ``type``."""
    text = PROTOCOL_MD.read_text()
    text = text[text.index("## 4. Server frames"):text.index("## 6. Resuming")]
    out = []
    for block in re.findall(r"```json\n(.*?)```", text, re.S):
        try:
            out.append(orjson.loads(block))
        except orjson.JSONDecodeError:  # one object per line
            out.extend(orjson.loads(line) for line in block.splitlines() if line.strip())
    return [f for f in out if isinstance(f, dict) and "type" in f]


def test_every_documented_type_has_a_class_and_an_example() -> None:
    text = PROTOCOL_MD.read_text()
    table = text.split("### Event types")[1].split("### Life")[0]
    event_types = set(re.findall(r"^\| `(\w+)` \|", table, re.M))
    section4 = text[text.index("## 4. Server frames"):text.index("## 5. Session log events")]
    frame_types = set(re.findall(r"^### `(\w+)`", section4, re.M))
    assert frame_types == {"welcome", "ack", "resumed", "cancelling", "pong", "error", "chunk",
                           "partial", "transcript"}  # transcript: its interim kind (no offset)
    # the client may know a type before this file documents it (a branch not merged yet), never
    # the other way round
    assert event_types | frame_types <= set(CLASSES) | UNTYPED
    assert {f["type"] for f in documented_frames()} >= (event_types | frame_types) - {"call"}


@pytest.mark.parametrize("frame", documented_frames(), ids=lambda f: f["type"])
def test_documented_examples_parse_to_their_class(frame: dict[str, Any]) -> None:
    parsed = parse_frame(frame)
    if frame["type"] in UNTYPED:
        assert parsed == UnknownEvent(frame["type"], frame["offset"])
        return
    assert type(parsed) is CLASSES[frame["type"]]
    fields = {f.name: getattr(parsed, f.name) for f in dataclasses.fields(parsed)}
    for key, value in frame.items():
        if key in fields and key not in ("limits", "raw"):
            assert fields[key] == value, key
    if "offset" in frame and frame["type"] not in ("welcome", "ack", "resumed"):
        assert parse_event(frame) == parsed
    off_log = frame["type"] in ("chunk", "partial") or (
        frame["type"] == "transcript" and "offset" not in frame)
    assert (parse_stream(frame) is not None) == off_log


def test_an_interim_transcript_is_a_stream_frame_with_its_utterance() -> None:
    frame = {"type": "transcript", "text": "what ti", "final": False, "source": "voice",
             "role": "user", "utterance": "ab12-3"}
    got = parse_frame(frame)
    assert got == parse_stream(frame) == Transcript(0, "what ti", False, "voice", "user", None,
                                                     utterance="ab12-3")
    final = parse_frame({**frame, "offset": 9, "final": True, "text": "what time"})
    assert isinstance(final, Transcript) and (final.offset, final.final, final.utterance) == (
        9, True, "ab12-3")


def test_welcome_limits_and_the_raw_object() -> None:
    frame = {"type": "welcome", "node": "n", "session": "s", "epoch": "e", "offset": 3,
             "protocol": "agentia.v1", "limits": {"heartbeat_s": 2}}
    w = parse_frame(frame)
    assert isinstance(w, Welcome) and w.limits == Limits(heartbeat_s=2.0) and w.raw is frame
    assert w.agent == ""  # an edge from before issue 14
    w = parse_frame({**frame, "agent": "triage"})
    assert isinstance(w, Welcome) and w.agent == "triage"


def test_call_states() -> None:
    ended = parse_event({"offset": 9, "type": "call", "state": "ended", "node": "v1",
                         "ts": 1.5, "reason": "worker_lost"})
    assert ended == CallState(9, "ended", "v1", 1.5, None, None, None, "worker_lost")


def test_unknown_types_and_bad_fields_never_raise() -> None:
    assert parse_event({"offset": 4, "type": "hologram"}) == UnknownEvent("hologram", 4)
    assert parse_frame({"type": 7}) == UnknownEvent("", 0)
    d = parse_event({"offset": True, "type": "reply", "turn": "x", "text": None})
    assert d == Reply(0, 0, "")
    assert parse_frame({"type": "chunk", "turn": "x", "seq": None, "text": 3}) == Chunk(
        0, 1, 0, "")
    assert parse_frame({"type": "partial", "turn": 4, "attempt": 2, "seq": 3,
                        "text": "abc"}) == Partial(4, 2, 3, "abc")
    # the log event of the earlier revision is now an unknown type, ignored like any other
    assert parse_frame({"offset": 6, "type": "delta", "turn": 5, "text": "x"}) == UnknownEvent(
        "delta", 6)
    assert parse_event({"offset": 5, "type": "turn_start", "turn": 2}) == TurnStart(5, 2, 1)
    err = parse_frame({"type": "error", "retry_after_ms": True})
    assert err == ErrorFrame("unknown", "", False, None, None)
