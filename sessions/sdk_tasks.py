"""No asyncio task for the Agents SDK's no-op hooks (issue 13: tasks per turn).

The SDK calls each lifecycle hook of a run (``on_agent_start``, ``on_llm_start``/``_end``,
``on_agent_end``...) as a pair gathered by ``gather_with_cancel``: the run's hooks and the
agent's, with ``noop_coroutine()`` standing in for an agent without hooks. Each awaitable
becomes a Task: about ten a turn of the demo agent, whose hooks are the base classes' own
methods, which do nothing. Here the gather leaves those out: a coroutine of a function whose
body is empty (``noop_coroutine``, the hooks' base methods, checked by their bytecode when
installed) is closed unstarted and counts as ``None``, and so is a tool's enabled check whose
answer its arguments decide (``is_enabled`` a bool: one Task per tool, twice a turn); the
rest are gathered by the SDK's own ``gather_with_cancel`` (a hook that is set, or an
``is_enabled`` callable, still runs in its own task); nothing left, no gather at all. Installed by
:func:`sessions.sdk_speedups.install`.

And a turn's tool plan runs its six executors (function tools, computer, custom, shell, apply
patch, local shell) as six gathered tasks even when the model called no tool: with every list
of the plan empty it is run the SDK's sequential way (``parallel=False``), which awaits the six
in turn; each has nothing to do, so the results are the same, without the six tasks.
"""

from __future__ import annotations

import dis
import inspect
from collections.abc import Awaitable, Callable
from types import CodeType, CoroutineType
from typing import Any

_SKIPPED = frozenset({"RESUME", "RETURN_GENERATOR", "POP_TOP", "NOP", "CACHE"})
GATHERERS = ("agents.run_internal.run_loop", "agents.run_internal.turn_resolution",
             "agents.run_internal.turn_preparation", "agents.run_internal.tool_planning",
             "agents.run_internal.tool_execution", "agents.run_internal.tool_actions",
             "agents.agent")
"""The SDK modules whose turn path gathers hooks and tools' enabled checks."""


def empty_body(code: CodeType) -> bool:
    """Whether ``code`` returns None and does nothing else (a docstring and ``pass``)."""
    ops = [(i.opname, i.argval) for i in dis.get_instructions(code)
           if i.opname not in _SKIPPED]
    return ops in ([("LOAD_CONST", None), ("RETURN_VALUE", None)],
                   [("RETURN_CONST", None)])


def noop_codes() -> frozenset[CodeType]:
    """The code of the SDK's no-op placeholder and of every hook base method that is empty."""
    from agents.lifecycle import AgentHooksBase, RunHooksBase
    from agents.util._coro import noop_coroutine

    funcs = [noop_coroutine] + [f for cls in (RunHooksBase, AgentHooksBase)
                                for f in vars(cls).values() if inspect.iscoroutinefunction(f)]
    return frozenset(f.__code__ for f in funcs if empty_body(f.__code__))


_PLAN_LISTS = ("function_runs", "computer_actions", "custom_tool_calls", "shell_calls",
               "apply_patch_calls", "local_shell_calls")


def install_tool_plan() -> Callable[..., Any]:
    """Wrap ``_execute_tool_plan`` where the turn path calls it; returns the original."""
    from agents.run_internal import tool_planning, turn_resolution

    original: Callable[..., Any] = tool_planning._execute_tool_plan

    async def execute(*, plan: Any, parallel: bool = True, **kwargs: Any) -> Any:
        if parallel and not any(getattr(plan, name) for name in _PLAN_LISTS):
            parallel = False  # no tool to run: the same empty results, without six tasks
        return await original(plan=plan, parallel=parallel, **kwargs)

    for module in (tool_planning, turn_resolution):
        if getattr(module, "_execute_tool_plan", None) is original:
            module._execute_tool_plan = execute  # type: ignore[attr-defined]
    return original


_NOTHING = object()


def nested_code(func: Any, name: str) -> CodeType | None:
    """The code of the function ``name`` defined inside ``func``."""
    return next((c for c in func.__code__.co_consts
                 if isinstance(c, CodeType) and c.co_name == name), None)


def tool_checks() -> dict[CodeType, bool]:
    """``_check_tool_enabled`` of ``get_all_tools`` and of ``resolve_enabled_function_tools``,
    each with whether it answers True for a tool that is not a ``FunctionTool``."""
    from agents.agent import AgentBase
    from agents.run_internal import tool_execution

    found = {nested_code(AgentBase.get_all_tools, "_check_tool_enabled"): True,
             nested_code(tool_execution.resolve_enabled_function_tools,
                         "_check_tool_enabled"): False}
    return {code: others for code, others in found.items() if code is not None}


def known_result(awaitable: Any, noops: frozenset[CodeType],
                 checks: dict[CodeType, bool]) -> Any:
    """What an unstarted coroutine would return without awaiting anything, when that is known
    before it runs (else ``_NOTHING``): None for a no-op; for a tool's enabled check, True for
    a tool that is not a function tool (``get_all_tools``'s) or its ``is_enabled`` when that
    is a bool (the check's first lines, which decide then)."""
    from agents.tool import FunctionTool

    if type(awaitable) is not CoroutineType \
            or inspect.getcoroutinestate(awaitable) != inspect.CORO_CREATED:
        return _NOTHING
    code = awaitable.cr_code
    if code in noops:
        return None
    others = checks.get(code)
    if others is None:
        return _NOTHING
    frame = awaitable.cr_frame
    tool = frame.f_locals.get("tool") if frame is not None else None
    if not isinstance(tool, FunctionTool):
        return True if others else _NOTHING
    return tool.is_enabled if isinstance(tool.is_enabled, bool) else _NOTHING


def install() -> Callable[..., Any]:
    """Replace ``gather_with_cancel`` in the SDK's turn-path modules; returns the original."""
    import importlib

    from agents.util import _asyncio_tasks

    original = _asyncio_tasks.gather_with_cancel
    noops, checks = noop_codes(), tool_checks()

    async def gather(*awaitables: Awaitable[Any],
                     on_child_failure: Callable[[BaseException], None] | None = None
                     ) -> tuple[Any, ...]:
        results = [known_result(a, noops, checks) for a in awaitables]
        real = [i for i, r in enumerate(results) if r is _NOTHING]
        if len(real) == len(awaitables):
            return await original(*awaitables, on_child_failure=on_child_failure)
        for a, r in zip(awaitables, results, strict=True):
            if r is not _NOTHING:
                a.close()  # type: ignore[attr-defined]  # a coroutine, never started
        if real:
            got = await original(*(awaitables[i] for i in real),
                                 on_child_failure=on_child_failure)
            for i, value in zip(real, got, strict=True):
                results[i] = value
        return tuple(results)

    for name in GATHERERS:
        module = importlib.import_module(name)
        if getattr(module, "gather_with_cancel", None) is original:
            module.gather_with_cancel = gather  # type: ignore[attr-defined]
    return original
