"""A turn's first model call without the Agents SDK's Runner, for the reply that is only text.

Most turns of a chat agent are one model call that streams text and ends. For those the
Runner's machinery (its run loop task, event queue, run state, tool lookup maps, guardrail and
hook setup, step resolution; ~25 tasks and ~40 loop steps a turn) cost the worker more than
the model adapter, Redis and our code together (docs/benchmarks.md, "Worker CPU per turn").
:class:`DirectRun` does what the Runner does for such a turn, in the same order and with the
SDK's own helpers: read the session, build the model's input, save the user's message, call
the model with the same arguments, yield its text, save the reply's message items.

It is *optimistic*: the moment the model's stream shows anything but a plain text reply (a
tool call, a refusal, reasoning, an error event, an empty or unusual response), it stops and
hands the turn to the Runner, which sees the same session (:class:`TurnSession`: the read
already made, the save already done) and the same model stream from its start
(:class:`ReplayProvider`: the events so far, then the live stream). The Runner then does what it
always does with it (tools, approvals, errors); the caller skips the text items it already
gave. So the Runner decides every case that is not a plain text reply, and only agents that use
nothing the direct path does not do itself are :func:`eligible` (no handoffs, guardrails,
hooks, structured output, prompt object, model object, callable instructions, SDK tracing;
function tools are fine: calling one goes to the Runner). tests/unit/test_direct_run.py runs
both paths on the same model.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from agents import Agent, FunctionTool, ModelProvider, RunConfig, RunContextWrapper
from agents._tool_identity import resolve_tool_name_collisions
from agents.items import ItemHelpers, MessageOutputItem, RunItem, TResponseInputItem
from agents.models.interface import Model
from agents.run_internal import turn_preparation as tp
from agents.run_internal.agent_tool_configuration import snapshot_agent_tools
from agents.run_internal.items import ensure_input_item_format
from agents.run_internal.prompt_cache_key import (
    PromptCacheKeyResolver,
    model_settings_with_prompt_cache_key,
)
from agents.run_internal.session_persistence import save_result_to_session
from agents.tracing import get_trace_provider
from agents.tracing.model_tracing import get_model_tracing_impl
from openai.types.responses import ResponseCompletedEvent, ResponseTextDeltaEvent

from sessions import sdk_history
from sessions.lean_model import LeanChatModel
from sessions.memory import Memory
from sessions.model_pump import CAUGHT_UP, END, ModelPump

_QUIET = frozenset({"response.created", "response.in_progress", "response.content_part.added",
                    "response.content_part.done", "response.output_text.done"})
"""Stream events of a text reply the Runner only passes on (no run item, no decision)."""


def eligible(agent: Agent[Any], cfg: RunConfig) -> bool:
    """Whether a run of ``agent`` under ``cfg`` may start on the direct path: nothing it uses
    is something the direct path does not do as the Runner does before the model's first
    event. Instructions and tools' ``is_enabled`` must be plain values: when the Runner takes
    over it works them out again, and a callable would be called twice. Function tools only
    (the Runner prepares computer tools). Checked per run (an Agent can be changed)."""
    return (type(agent) is Agent and not agent.handoffs and not agent.input_guardrails
            and not agent.output_guardrails and agent.hooks is None
            and agent.output_type in (None, str) and agent.prompt is None
            and (agent.model is None or isinstance(agent.model, str))
            and agent.model_settings.retry is None and agent.model_settings.timeout is None
            and not agent.mcp_servers and not getattr(agent, "capabilities", None)
            and (agent.instructions is None or isinstance(agent.instructions, str))
            and all(isinstance(t, FunctionTool) and isinstance(t.is_enabled, bool)
                    for t in agent.tools)
            and cfg.model is None and cfg.model_settings is None
            and not cfg.input_guardrails and not cfg.output_guardrails
            and cfg.call_model_input_filter is None and cfg.session_input_callback is None
            and cfg.session_settings is None and _tracing_off()
            and cfg.model_provider is not None)


def _tracing_off() -> bool:
    """The SDK's tracing is off for the process (``set_tracing_disabled``): the Runner's trace
    and span objects are no-ops, so a run without them is the same run."""
    return getattr(get_trace_provider(), "_disabled", False) is True


class Fallback:
    """What the Runner needs to go on with a turn the direct path gave up."""

    def __init__(self, session: TurnSession, provider: ReplayProvider, texts: int) -> None:
        self.session = session
        self.provider = provider
        self.texts = texts
        """Text events already given as :class:`sessions.runtime.Delta` (to skip)."""

    def run_config(self, cfg: RunConfig) -> RunConfig:
        return replace(cfg, model_provider=self.provider)

    async def close(self) -> None:
        """Stop the model stream (the Runner's run ended, or never asked for it)."""
        await self.provider.pump.stop()


class DirectRun:
    """One run of an :func:`eligible` agent on ``text``: :meth:`stream` yields the reply's
    text pieces; afterwards ``fallback`` is set when the Runner must go on with the turn."""

    def __init__(self, agent: Agent[Any], text: str, memory: Memory, cfg: RunConfig) -> None:
        self.agent, self.text, self.cfg = agent, text, cfg
        self.memory = TurnSession(memory)
        self.fallback: Fallback | None = None
        self._ctx: RunContextWrapper[Any] | None = None

    def context(self) -> RunContextWrapper[Any]:
        """The run's context wrapper, made when first needed: a plain text turn of an agent
        with string instructions and tools worked out before never needs it (the Runner makes
        its own when it takes over), and making one is a pydantic validation (~6 µs)."""
        if self._ctx is None:
            self._ctx = RunContextWrapper[Any](context=None)
        return self._ctx

    async def stream(self) -> AsyncIterator[str]:
        pump = await self._call_model()
        seen: list[Any] = []
        texts, done, given = 0, False, False
        completed: ResponseCompletedEvent | None = None
        try:
            while (event := await pump.next()) is not END:
                if type(event) is str:  # text past the SDK's handler (sessions/lean_model.py)
                    yield event
                    continue
                if event is CAUGHT_UP:  # the next event's text was given (just above)
                    given = True
                    continue
                seen.append(event)
                if isinstance(event, ResponseTextDeltaEvent) and not done:
                    # the text deltas that came meanwhile, given as one piece (the
                    # coalescer joins them anyway): one step of the turn, not one per token
                    more = pump.take_ready(ResponseTextDeltaEvent)
                    seen.extend(more)
                    texts += 1 + len(more)
                    pieces = more if given else [event, *more]
                    if pieces:
                        yield "".join([e.delta for e in pieces])
                    given = False
                elif isinstance(event, ResponseCompletedEvent) and _plain_reply(event) \
                        and not done:
                    done, completed = True, event  # the Runner reads to the end, then saves
                elif done or not _quiet(event):
                    done = False
                    break
            if done and completed is not None:
                await self._save_reply(completed)
                return
            self.memory.prime()
            self.fallback = Fallback(self.memory,
                                     ReplayProvider(self.cfg.model_provider, seen, pump), texts)
        finally:
            if self.fallback is None:  # the Runner does not go on with it
                await pump.stop()

    async def _call_model(self) -> ModelPump:
        """What the Runner does from the session's read to the model's call, in its order."""
        agent, cfg = self.agent, self.cfg
        model = tp.get_model(agent, cfg)  # first: a model that only reads needs no copies
        # the Runner's preparation of the input, in one pass for a history of messages
        model_input, to_save = await sdk_history.prepare(
            self.text, self.memory, self.context, copies=not sdk_history.reads_only(model))
        tools = await model_tools(agent, self.context, cfg.tool_name_collision_policy)
        instructions = agent.instructions if agent.instructions is None \
            or isinstance(agent.instructions, str) \
            else await agent.get_system_prompt(self.context())  # as it answers these
        settings = tp.get_model_settings(agent, cfg)  # sdk_speedups' when installed
        await self._save_input(to_save)
        key = PromptCacheKeyResolver().resolve(settings, model=model, conversation_id=None,
                                               session=self.memory, group_id=cfg.group_id)
        settings = model_settings_with_prompt_cache_key(settings, key)
        pump = ModelPump()
        if isinstance(model, LeanChatModel):
            model.tap = pump
        pump.start(model.stream_response(
            instructions, model_input, settings, tools, None, [],
            get_model_tracing_impl(cfg.tracing_disabled, cfg.trace_include_sensitive_data),
            previous_response_id=None, conversation_id=None, prompt=None))
        return pump

    # The two saves of a turn. For plain messages (the input's, a text reply's) the SDK's
    # ``save_result_to_session`` comes down to one ``add_items`` of copies of them on this
    # session (a TurnSession: no ``wrapper`` parameter, no compaction, no write generation);
    # its fingerprints of every item (a sorted ``json.dumps`` each), de-duplication passes,
    # run items and session checks were ~8 % of a burst worker's samples (issue 13, session
    # 19). sdk_history.input_saved / reply_saved make the same items
    # (tests/unit/test_direct_saves.py compares them, and the stored bytes, with the SDK's);
    # anything else goes the SDK's way.

    async def _save_input(self, to_save: list[TResponseInputItem]) -> None:
        if (items := sdk_history.input_saved(to_save)) is not None:
            if items:
                await self.memory.add_items(items)
            return
        items = [ensure_input_item_format(i) for i in ItemHelpers.input_to_new_input_list(to_save)]
        if items:
            await save_result_to_session(self.memory, items, [], None, wrapper=self.context())

    async def _save_reply(self, event: ResponseCompletedEvent) -> None:
        response = event.response
        if (saved := sdk_history.reply_saved(response.output)) is not None:
            if saved:
                await self.memory.add_items(saved)
            return
        items: list[RunItem] = [MessageOutputItem(agent=self.agent, raw_item=o)  # type: ignore[arg-type]
                                for o in response.output]
        await save_result_to_session(self.memory, [], items, None, response_id=response.id,
                                     wrapper=self.context())


TOOLS_KEPT = 64
"""Agents whose model tools :func:`model_tools` keeps (all are forgotten past it)."""
_TOOLS: dict[int, tuple[Agent[Any], tuple[Any, ...], tuple[Any, ...], str, list[Any]]] = {}
"""id(agent) -> (the agent, its tools, their ``is_enabled``, the collision policy, the model's
tools worked out from them)."""


async def model_tools(agent: Agent[Any], ctx: Callable[[], RunContextWrapper[Any]],
                      policy: Any) -> list[Any]:
    """The tools the model is given, as the Runner works them out (``get_all_tools``, then
    ``resolve_tool_name_collisions``), kept per agent while its tools are the same objects
    with the same ``is_enabled``. For an :func:`eligible` agent (function tools, ``is_enabled``
    a bool, no MCP servers) the result depends on nothing else, and working it out again was
    ~5 % of a worker's CPU per demo turn (a Task per tool, name checks per tool). The SDK's
    snapshot of the agent's tools is still taken every run: it is how concurrent runs of one
    agent find its tools changed under them."""
    tools = snapshot_agent_tools(agent)
    enabled = tuple(getattr(t, "is_enabled", None) for t in tools)
    kept = _TOOLS.get(id(agent))
    if kept is not None and kept[0] is agent and kept[3] == policy and kept[2] == enabled \
            and _same(kept[1], tools):
        return list(kept[4])
    resolved, _ = resolve_tool_name_collisions(await agent.get_all_tools(ctx()), [],
                                               collision_policy=policy)
    if len(_TOOLS) >= TOOLS_KEPT:
        _TOOLS.clear()
    _TOOLS[id(agent)] = (agent, tools, enabled, policy, list(resolved))
    return resolved


def _same(kept: tuple[Any, ...], tools: tuple[Any, ...]) -> bool:
    return len(kept) == len(tools) and all(a is b for a, b in zip(kept, tools, strict=True))


def _quiet(event: Any) -> bool:
    kind = getattr(event, "type", None)
    if kind in _QUIET:
        return True
    if kind in ("response.output_item.added", "response.output_item.done"):
        return getattr(event.item, "type", None) == "message"
    return False


def _plain_reply(event: ResponseCompletedEvent) -> bool:
    """A completed response the Runner would end the run with, having done nothing but save
    its messages: only message items, each only text (a refusal is an error there)."""
    output = event.response.output
    return bool(output) and all(
        o.type == "message" and o.content and all(p.type == "output_text" for p in o.content)
        for o in output)


class TurnSession:
    """The turn's session (the SDK's ``Session``), passed through, remembering the first read
    and whether the first save was made. After :meth:`prime` (the direct path gave up) it is
    the session as the Runner must see it: its first read answers what the direct path read,
    its first save (the user's input) is the one the direct path made already."""

    def __init__(self, memory: Memory) -> None:
        self.memory = memory
        self.session_id = memory.session_id
        self.session_settings = memory.session_settings
        self._got: list[TResponseInputItem] | None = None
        self._saved = False
        self._primed = False

    @property
    def outage(self) -> bool:
        return self.memory.outage

    @outage.setter
    def outage(self, value: bool) -> None:
        self.memory.outage = value

    def prime(self) -> None:
        self._primed = True

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        if self._primed and self._got is not None:
            got, self._got = self._got, None
            return got
        got = await self.memory.get_items(limit)
        if not self._primed:
            self._got = list(got)
        return got

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        if self._primed and self._saved:
            self._saved = False
            return
        await self.memory.add_items(items)
        self._saved = not self._primed

    async def pop_item(self) -> TResponseInputItem | None:
        return await self.memory.pop_item()

    async def clear_session(self) -> None:
        await self.memory.clear_session()

    def take_unsaved(self) -> list[bytes]:
        return self.memory.take_unsaved()

    async def save(self) -> None:
        await self.memory.save()


class ReplayProvider(ModelProvider):
    """``inner``'s models, except that the first streamed call gives the events the direct
    path already took from the model, then the rest of that stream (from its pump). Until
    then a model is a shallow copy of ``inner``'s with that one method replaced: the Runner
    looks at a model's type and methods (retry advice, prompt cache keys), which must be the
    model's own."""

    def __init__(self, inner: ModelProvider, seen: list[Any], pump: ModelPump) -> None:
        self.inner, self.seen, self.pump = inner, seen, pump
        self.replayed = False

    def get_model(self, model_name: str | None) -> Model:
        model = self.inner.get_model(model_name)
        if self.replayed:
            return model
        twin = copy.copy(model)
        twin.stream_response = functools.partial(self._stream, model)  # type: ignore[method-assign]
        return twin

    def _stream(self, model: Model, *args: Any, **kwargs: Any) -> Any:
        if self.replayed:
            return model.stream_response(*args, **kwargs)
        self.replayed = True
        return self._again()

    async def _again(self) -> AsyncIterator[Any]:
        try:
            for event in self.seen:
                yield event
            while (event := await self.pump.next()) is not END:
                if event is not CAUGHT_UP:  # text past the handler is only ever before
                    yield event
        finally:
            await self.pump.stop()
