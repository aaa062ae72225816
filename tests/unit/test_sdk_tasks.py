"""No tasks for the SDK's no-op hooks nor for a turn without tool calls (sessions/sdk_tasks.py),
with every hook that is set still called and tool calls still run."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

import pytest
from agents import AgentHooks, RunContextWrapper, RunHooks, Runner, function_tool
from agents.lifecycle import RunHooksBase
from agents.run_internal import run_loop, tool_planning, turn_resolution
from agents.util._coro import noop_coroutine

from sessions import sdk_speedups as S
from sessions import sdk_tasks
from tests.agents_fixtures import fast
from tests.counting import TaskCount


def setup_module() -> None:
    assert S.install()


def test_only_empty_functions_count_as_no_ops() -> None:
    async def works() -> int:
        return 1

    async def documented() -> None:
        """Nothing else."""

    codes = sdk_tasks.noop_codes()
    assert noop_coroutine.__code__ in codes
    assert RunHooksBase.on_agent_start.__code__ in codes
    assert len(codes) == 15  # the placeholder and the 7 + 7 base hooks
    assert sdk_tasks.empty_body(documented.__code__)
    assert not sdk_tasks.empty_body(works.__code__)


async def test_gather_skips_no_ops_and_runs_the_rest() -> None:
    gather = vars(run_loop)["gather_with_cancel"]
    assert gather is vars(turn_resolution)["gather_with_cancel"]
    assert gather is not S.ORIGINALS["gather_with_cancel"]
    ctx: Any = RunContextWrapper(context=None)

    async def real() -> str:
        await asyncio.sleep(0)
        return "ran"
    with TaskCount() as none:
        assert await gather(RunHooks().on_agent_start(ctx, fast), noop_coroutine()) == (None,
                                                                                       None)
    with TaskCount() as one:
        assert await gather(noop_coroutine(), real()) == (None, "ran")
    with TaskCount() as both:
        assert await gather(real(), real()) == ("ran", "ran")
    assert (none.made, one.made, both.made) == (0, 1, 2)

    async def boom() -> None:
        raise ValueError("boom")
    failures: list[BaseException] = []
    with pytest.raises(ValueError):
        await gather(noop_coroutine(), boom(), on_child_failure=failures.append)
    assert len(failures) == 1


class Recorded(RunHooks[Any]):
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        self.seen.append("run:agent_start")

    async def on_llm_end(self, context: Any, agent: Any, response: Any) -> None:
        self.seen.append("run:llm_end")

    async def on_tool_end(self, context: Any, agent: Any, tool: Any, result: object) -> None:
        self.seen.append(f"run:tool_end:{tool.name}")

    async def on_agent_end(self, context: Any, agent: Any, output: Any) -> None:
        self.seen.append("run:agent_end")


class AgentRecorded(AgentHooks[Any]):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen

    async def on_start(self, context: Any, agent: Any) -> None:
        self.seen.append("agent:start")

    async def on_end(self, context: Any, agent: Any, output: Any) -> None:
        self.seen.append("agent:end")


async def test_hooks_that_are_set_still_run_and_tools_still_run() -> None:
    assert vars(turn_resolution)["_execute_tool_plan"] is not S.ORIGINALS["tool_plan"]
    assert tool_planning._execute_tool_plan is not S.ORIGINALS["tool_plan"]
    hooks = Recorded()
    agent = fast.clone(hooks=AgentRecorded(hooks.seen))
    result = Runner.run_streamed(agent, "what time is it?", hooks=hooks)
    async for _ in result.stream_events():
        pass
    assert "UTC" in str(result.final_output)
    seen = hooks.seen
    assert seen[:2] == ["run:agent_start", "agent:start"]
    assert "run:tool_end:current_time" in seen
    assert seen.count("run:llm_end") == 2  # the tool call's reply, then the answer
    assert sorted(seen[-2:]) == ["agent:end", "run:agent_end"]


async def test_a_turn_without_tools_or_hooks_makes_fewer_tasks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def run() -> int:
        with TaskCount() as count:
            result = Runner.run_streamed(fast, "hello there")
            async for _ in result.stream_events():
                pass
        return count.made
    fast_made = await run()
    for name in sdk_tasks.GATHERERS:  # the SDK's own functions back, for this test only
        module = importlib.import_module(name)
        if hasattr(module, "gather_with_cancel"):
            monkeypatch.setattr(module, "gather_with_cancel", S.ORIGINALS["gather_with_cancel"])
    for module in (tool_planning, turn_resolution):
        monkeypatch.setattr(module, "_execute_tool_plan", S.ORIGINALS["tool_plan"])
    sdk_made = await run()
    print(f"SDK tasks per run: {sdk_made} -> {fast_made}")
    # 4 hook pairs (agent start, LLM start and end, agent end), the 6 tool executors, and each
    # tool's enabled check (a bool), twice
    assert sdk_made - fast_made == 4 * 2 + 6 + 2 * len(fast.tools), (sdk_made, fast_made)


async def test_a_tools_enabled_check_runs_unless_a_bool_decides_it() -> None:
    calls: list[str] = []

    def enabled(ctx: Any, agent: Any) -> bool:
        calls.append(agent.name)
        return False
    off = function_tool(lambda: "x", name_override="off", is_enabled=False)
    asked = function_tool(lambda: "y", name_override="asked", is_enabled=enabled)
    agent = fast.clone(tools=[*fast.tools, off, asked])
    ctx: Any = RunContextWrapper(context=None)
    with TaskCount() as count:
        tools = await agent.get_all_tools(ctx)
    assert [t.name for t in tools] == [t.name for t in fast.tools]
    assert calls == [agent.name] and count.made == 1  # only the callable's check is a task
