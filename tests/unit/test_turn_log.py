"""sessions/turn_log.py without Redis: what one attempt appends for each item of the run, in
how many appends, and when the streamed text is flushed first."""

from __future__ import annotations

from typing import Any

from sessions.bus import Turn
from sessions.runtime import AgentSwitched, Delta, ToolCalled, ToolOutput
from sessions.turn_log import TurnLog, started


class _Bus:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    async def append(self, sid: str, event: Any, **kw: Any) -> int:
        self.log.append(("append", [_kind(e) for e in event]))
        return 1


class _Co:
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def add(self, text: str) -> None:
        self.log.append(("text", text))

    async def flush(self) -> None:
        self.log.append(("flush",))


def _kind(e: dict[str, Any]) -> str:
    return f"{e['state']}:{e['agent']}" if e["type"] == "state" else str(e["type"])


async def test_each_step_is_one_append_and_text_is_flushed_before_events() -> None:
    log: list[Any] = []
    turn = Turn("s", 5, "c", "hi", "u", "chat", 0.0)
    tl = TurnLog(_Bus(log), turn, "w1", _Co(log), "triage",  # type: ignore[arg-type]
                 frozenset({"secret"}))
    assert [_kind(e) for e in started(turn, "triage")] == ["thinking:triage"]
    for item in (AgentSwitched("triage", "demo"),
                 ToolCalled("c1", "calc", {"x": 1}, "demo"), ToolOutput("c1", "calc", "2", False),
                 ToolCalled("c2", "secret", {"y": 2}, "demo"),
                 ToolOutput("c2", "secret", "s3cr3t", False),
                 Delta("It "), Delta("is 2.")):
        await tl.add(item)
    assert log == [
        ("flush",), ("append", ["handoff"]),
        ("flush",), ("append", ["tool:demo", "tool_call"]),
        ("flush",), ("append", ["tool_result"]),
        ("flush",), ("append", ["tool_call"]),  # still in state tool: no state event
        ("flush",), ("append", ["tool_result"]),
        ("append", ["speaking:demo"]), ("text", "It "), ("text", "is 2."),  # no flush
    ]
    assert [_kind(e) for e in tl.ending({"type": "reply"})] == ["idle:demo", "reply"]
    assert tl.agent == "demo"
