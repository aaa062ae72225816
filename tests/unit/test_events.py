"""sessions/events.py builds exactly the event types and fields docs/protocol.md §5 lists."""

from __future__ import annotations

import re
from pathlib import Path

from sessions import events as E

DOC = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"

BUILT = {
    "user": E.user("m-1", "hi", "chat", "alice", 1.5),
    "turn_start": E.turn_start(18, 1),
    "state": E.state(18, "thinking", "Agentia demo"),
    "tool_call": E.tool_call(18, "call_1", "calculate", {"expression": "6 * 7"}, "Agentia demo"),
    "tool_result": E.tool_result(18, "call_1", "calculate", "42", False),
    "handoff": E.handoff(18, "Agentia triage", "Agentia demo"),
    "reply": E.reply(18, "It is 09:14.", "Agentia demo"),
    "cancelled": E.cancelled(18, "", "Agentia demo"),
    "turn_error": E.turn_error(18, "turn_failed", "the turn failed on every attempt"),
    "call": E.call("ended", "voice-1", 2.5),
    "transcript": E.transcript("It is noon.", True, "agent", 18),
    "message": E.message("operator", "Your refund is approved.", "support-desk", 3.5),
    "takeover": E.takeover(True, "op-ann", 4.5),
    "presence": E.presence(2, False, True, 5.5),
    "approval_request": E.approval_request(18, "call_1", "book_table", {"people": 2}, "demo",
                                           1767226200.5),
    "approval_result": E.approval_result(18, "call_1", False, "alice", "not tonight"),
}


def _documented() -> dict[str, list[str]]:
    """type -> the field names its row in the §5 table names first, in order."""
    section = DOC.read_text().split("### Event types", 1)[1].split("### Life of a turn", 1)[0]
    rows: dict[str, list[str]] = {}
    for line in section.splitlines():
        m = re.match(r"\| `(\w+)` \| (.*?) \|", line)
        if m:
            text = m[2]
            while re.search(r"\([^()]*\)", text):  # drop explanations, nested ones too
                text = re.sub(r" ?\([^()]*\)", "", text)
            # the fields every event of the type has: before the first ";" (optional ones)
            rows[m[1]] = re.findall(r"(?:^|, )`(\w+)`", text.split(";")[0])
    return rows


def test_every_documented_type_is_built_with_its_documented_fields() -> None:
    doc = _documented()
    assert set(doc) == set(BUILT)
    for kind, event in BUILT.items():
        assert event["type"] == kind
        fields = [f for f in event if f != "type"]
        assert fields[:len(doc[kind])] == doc[kind], kind


def _frame_table(heading: str) -> list[str]:
    """The field names of a server frame's table (the rows after ``heading``)."""
    section = DOC.read_text().split(heading, 1)[1].split("\n### ", 1)[0]
    return re.findall(r"^\| `(\w+)` \|", section, flags=re.M)


def test_chunk_and_partial_have_their_documented_fields_and_no_offset() -> None:
    for heading, frame in (("### `chunk`", E.chunk(18, 1, 2, "14 UTC.")),
                           ("### `partial`", E.partial(18, 1, 2, "It is 09:14 UTC."))):
        assert [f for f in frame if f != "type"] == _frame_table(heading)
        assert "offset" not in frame


def test_turn_error_is_never_retryable_and_every_turn_end_is_known() -> None:
    assert BUILT["turn_error"]["retryable"] is False
    assert {"reply", "cancelled", "turn_error"} == E.TURN_ENDS


def test_a_frame_is_the_event_with_its_offset_first() -> None:
    assert E.frame_for(7, b'{"type":"reply","turn":5,"text":"x"}') == (
        b'{"offset":7,"type":"reply","turn":5,"text":"x"}')


def test_private_tools_carry_no_arguments_or_output() -> None:
    call = E.tool_call(3, "c1", "lookup", {"account": "42"}, "a", private=True)
    result = E.tool_result(3, "c1", "lookup", "secret balance", False, private=True)
    assert "arguments" not in call and call["private"] is True
    assert "output" not in result and result["private"] is True
    assert "secret" not in str(result) and "42" not in str(call)


def test_tool_output_is_cut_to_its_documented_size() -> None:
    long = "x" * (E.TOOL_OUTPUT_MAX + 10)
    cut = E.tool_result(3, "c1", "t", long, False)
    assert len(cut["output"]) == E.TOOL_OUTPUT_MAX and cut["truncated"] is True
    assert "truncated" not in E.tool_result(3, "c1", "t", "x" * E.TOOL_OUTPUT_MAX, False)
    assert "4,096" in DOC.read_text()


def test_state_between_turns_leaves_turn_out() -> None:
    assert E.state(None, "listening", "a") == {"type": "state", "state": "listening",
                                               "agent": "a"}


def test_a_private_tool_s_approval_request_keeps_its_arguments_in_the_worker() -> None:
    ev = E.approval_request(18, "call_1", "lookup", {"account": "42"}, "demo", 1.5, private=True)
    assert ev == {"type": "approval_request", "turn": 18, "call_id": "call_1", "name": "lookup",
                  "agent": "demo", "expires": 1.5, "private": True}


def test_a_turn_held_by_a_takeover_ends_cancelled_with_its_reason() -> None:
    assert E.cancelled(18, "", "demo", reason=E.TAKEOVER) == {
        "type": "cancelled", "turn": 18, "text": "", "agent": "demo", "reason": "takeover"}
    assert "reason" not in E.cancelled(18, "", "demo")
