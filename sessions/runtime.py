"""Running one turn with the OpenAI Agents SDK: agent loading, model choice, streaming."""

from __future__ import annotations

import copy
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import httpx2
import orjson
from agents import Agent, ModelProvider, RunConfig, Runner, RunState, set_tracing_disabled
from agents.items import HandoffOutputItem, ToolApprovalItem, ToolCallItem, ToolCallOutputItem
from agents.models.openai_provider import OpenAIProvider
from agents.tool import DEFAULT_APPROVAL_REJECTION_MESSAGE, default_tool_error_function
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.types.responses import ResponseTextDeltaEvent

from sessions import direct_run, sdk_speedups
from sessions.demo import DemoProvider
from sessions.lean_model import LeanProvider
from sessions.memory import Memory

MAX_MODEL_CONNECTIONS = 2_000
"""HTTP connections the worker's OpenAI client may hold: each streaming turn holds one for
its whole reply, and a worker runs up to ``AGENTIA_CONCURRENCY`` (1,000) turns at once."""
LEAN_POOLS = 16
"""Connection pools (clients) of ``AGENTIA_MODEL_CLIENT=lean``, :class:`LeanProvider`."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    api_key: str | None = None
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    demo_word_delay: float = 0.03
    tracing: bool = False
    read_every_ms: int = 0
    """The least time between two reads of a model's stream while it streams text
    (``AGENTIA_MODEL_READ_MS``, :class:`sessions.sdk_speedups.MergingSSEDecoder`)."""
    client: str = "openai"
    """``openai`` or ``lean`` (``AGENTIA_MODEL_CLIENT``, :mod:`sessions.lean_model`)."""

    @property
    def demo(self) -> bool:
        return not (self.api_key or self.base_url)


def load_agent(spec: str) -> Agent[Any]:
    """Import ``module:attribute`` (like uvicorn's app string) and check it is an Agent."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--agent must look like 'package.module:name', got {spec!r}")
    obj = getattr(importlib.import_module(module_name), attr)
    if callable(obj) and not isinstance(obj, Agent):
        obj = obj()
    if not isinstance(obj, Agent):
        raise TypeError(f"{spec} is a {type(obj).__name__}, not an agents.Agent")
    return obj


def model_provider(cfg: ModelConfig) -> ModelProvider:
    """The worker's model provider, built once per process (with the run settings every turn
    shares, see :func:`run_config`)."""
    tracing = bool(cfg.tracing and cfg.api_key)
    set_tracing_disabled(not tracing)
    sdk_speedups.install()
    provider: ModelProvider
    if cfg.demo:
        provider = DemoProvider(cfg.demo_word_delay)
    elif cfg.client == "lean":
        clients = [openai_client(cfg, MAX_MODEL_CONNECTIONS // LEAN_POOLS)
                   for _ in range(LEAN_POOLS)]
        provider = _DefaultModel(LeanProvider(clients, cfg.read_every_ms / 1000), cfg.model)
    else:
        provider = _DefaultModel(OpenAIProvider(openai_client=openai_client(cfg),
                                                use_responses=False), cfg.model)
    _RUN_CONFIG[:] = [provider, RunConfig(model_provider=provider,
                                          tracing_disabled=not tracing)]
    return provider


def openai_client(cfg: ModelConfig, connections: int = MAX_MODEL_CONNECTIONS) -> AsyncOpenAI:
    """One client (one connection pool) for every turn of the worker, allowing
    :data:`MAX_MODEL_CONNECTIONS` streams at once. The OpenAI client's default (1,000, 100
    kept alive) would queue a worker's turns behind others' whole replies at its
    concurrency, and reconnect for most turns."""
    limits = httpx2.Limits(max_connections=connections,
                          max_keepalive_connections=connections, keepalive_expiry=30)
    http = DefaultAsyncHttpxClient(limits=limits, timeout=httpx2.Timeout(600, connect=10))
    return sdk_speedups.ChunkClient(api_key=cfg.api_key or "not-needed", base_url=cfg.base_url,
                                    http_client=http, read_every=cfg.read_every_ms / 1000)


_RUN_CONFIG: list[Any] = []
"""[provider, its RunConfig]: the last provider's (a worker has one)."""


def run_config(provider: ModelProvider) -> RunConfig:
    """The run settings for ``provider``, built once: making a RunConfig builds a default
    provider and reads the environment (0.1 ms), and no run changes it."""
    if not _RUN_CONFIG or _RUN_CONFIG[0] is not provider:
        _RUN_CONFIG[:] = [provider, RunConfig(model_provider=provider)]
    cfg: RunConfig = _RUN_CONFIG[1]
    return cfg


class _DefaultModel(ModelProvider):
    """Fills in the configured model name for agents that do not name one."""

    def __init__(self, inner: ModelProvider, default: str) -> None:
        self.inner, self.default = inner, default

    def get_model(self, model_name: str | None) -> Any:
        return self.inner.get_model(model_name or self.default)


def _per_run(agent: Agent[Any]) -> Agent[Any]:
    """The agent a run starts with: a shallow copy when it hands off to nobody. The SDK keeps
    the runs of one Agent object in one list and scans it several times per model call (to
    catch tools changed mid-run), which made 1,000 concurrent turns on the worker's one agent
    quadratic (17 % of its CPU). The copy shares tools, settings and hooks and costs 3 us. An
    agent with handoffs runs as itself: agents it hands off to may hand back to the original,
    and two agents of one name in a run would change the names the SDK gives them."""
    return agent if agent.handoffs else copy.copy(agent)


@dataclass(frozen=True, slots=True)
class Delta:
    """A piece of the reply's text."""
    text: str


@dataclass(frozen=True, slots=True)
class ToolCalled:
    """The model called a tool (before it runs). ``arguments`` is the parsed JSON object the
    model gave; text that is not a JSON object is kept as ``{"_raw": text}``."""
    call_id: str
    name: str
    arguments: dict[str, Any]
    agent: str


@dataclass(frozen=True, slots=True)
class ToolOutput:
    """A tool returned (or failed: ``is_error``, which includes a call that was not
    approved)."""
    call_id: str
    name: str
    output: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class AgentSwitched:
    """The run handed off from one agent to another (SDK handoff; ``Agent.name``s)."""
    from_agent: str
    to_agent: str


class ApprovalAsk(NamedTuple):
    """One tool call waiting for a person's decision."""
    call_id: str
    name: str
    arguments: dict[str, Any]
    agent: str


@dataclass(frozen=True, slots=True)
class Paused:
    """The run stopped before tools that need approval (``needs_approval=True``): the last
    item a paused run yields. Approve or reject each of ``state.get_interruptions()``, then
    pass ``state`` to :func:`stream_turn` again to go on."""
    state: RunState[Any] = field(repr=False)
    requests: list[ApprovalAsk]


TurnItem = Delta | ToolCalled | ToolOutput | AgentSwitched | Paused
TOOL_ERROR_OUTPUTS = frozenset({default_tool_error_function(None, Exception()),  # type: ignore[arg-type]
                                DEFAULT_APPROVAL_REJECTION_MESSAGE})
"""Outputs that mean the tool did not run to a result: the SDK's default text for a tool that
raised, and its text for a call that was not approved."""


def parse_arguments(raw: Any) -> dict[str, Any]:
    """The model's tool arguments as a JSON object (``{"_raw": text}`` when they are not)."""
    if isinstance(raw, dict):
        return raw
    text = "" if raw is None else str(raw)
    try:
        value = orjson.loads(text or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": text}
    return value if isinstance(value, dict) else {"_raw": text}


def agent_name(agent: Agent[Any], input: str | RunState[Any]) -> str:
    """The name of the agent a run of ``input`` starts with (a resumed run: where it paused)."""
    current = getattr(input, "_current_agent", None)
    return str(current.name) if isinstance(current, Agent) else agent.name


async def stream_turn(agent: Agent[Any], input: str | RunState[Any], memory: Memory,
                      provider: ModelProvider) -> AsyncIterator[TurnItem]:
    """Run the agent on one user message (or go on with a paused run), yielding what it does
    as it happens: text, tool calls and their outputs, handoffs, and last, if tools wait for
    approval, :class:`Paused`. Guardrail tripwires raise the SDK's exceptions.

    A new turn of an agent that :func:`sessions.direct_run.eligible` allows starts without the
    Runner; the Runner takes over where the model's reply is more than text."""
    cfg = run_config(provider)
    if isinstance(input, str) and DIRECT[0] and direct_run.eligible(agent, cfg):
        run = direct_run.DirectRun(agent, input, memory, cfg)
        async for text in run.stream():
            yield Delta(text)
        if run.fallback is None:
            return
        try:
            async for item in _run_streamed(agent, input, run.fallback.session,
                                            run.fallback.run_config(cfg), run.fallback.texts):
                yield item
        finally:
            await run.fallback.close()
        return
    async for item in _run_streamed(agent, input, memory, cfg, 0):
        yield item


DIRECT = [True]
"""Whether :func:`stream_turn` may take the direct path (tests compare both paths)."""


async def _run_streamed(agent: Agent[Any], input: str | RunState[Any], memory: Memory,
                        cfg: RunConfig, skip: int) -> AsyncIterator[TurnItem]:
    """The Runner's run, its first ``skip`` text events left out (given already)."""
    starting = _per_run(agent) if isinstance(input, str) else agent
    result = Runner.run_streamed(starting, input=input, session=memory, run_config=cfg)
    names = _pending_names(input)
    try:
        async for ev in result.stream_events():
            if ev.type == "raw_response_event":
                if isinstance(ev.data, ResponseTextDeltaEvent):
                    if skip:
                        skip -= 1
                    else:
                        yield Delta(ev.data.delta)
            elif ev.type == "run_item_stream_event":
                item = _run_item(ev.name, ev.item, names)
                if item is not None:
                    yield item
        if result.interruptions:
            yield Paused(result.to_state(), [_ask(i) for i in result.interruptions])
    finally:
        if not result.is_complete:
            result.cancel()


def _run_item(name: str, item: Any, names: dict[str, str]) -> TurnItem | None:
    if name == "tool_called" and isinstance(item, ToolCallItem):
        raw = item.raw_item
        call_id = str(_field(raw, "call_id") or _field(raw, "id") or "")
        tool = str(_field(raw, "name") or "tool")
        names[call_id] = tool
        return ToolCalled(call_id, tool, parse_arguments(_field(raw, "arguments")),
                          item.agent.name)
    if name == "tool_output" and isinstance(item, ToolCallOutputItem):
        call_id = str(item.call_id or "")
        output = item.output if isinstance(item.output, str) else str(item.output)
        # a rejection with a reason (sessions/pausing.py) starts with the SDK's text
        return ToolOutput(call_id, names.get(call_id, "tool"), output,
                          output in TOOL_ERROR_OUTPUTS
                          or output.startswith(DEFAULT_APPROVAL_REJECTION_MESSAGE))
    if name == "handoff_occured" and isinstance(item, HandoffOutputItem):
        return AgentSwitched(item.source_agent.name, item.target_agent.name)
    return None


def _field(raw: Any, key: str) -> Any:
    return raw.get(key) if isinstance(raw, dict) else getattr(raw, key, None)


def _ask(item: ToolApprovalItem) -> ApprovalAsk:
    raw = item.raw_item
    call_id = str(_field(raw, "call_id") or _field(raw, "id") or "")
    return ApprovalAsk(call_id, str(item.name or "tool"), parse_arguments(item.arguments),
                       item.agent.name)


def _pending_names(input: str | RunState[Any]) -> dict[str, str]:
    """call_id → tool name of the calls a resumed run will answer (their ``tool_called`` was
    streamed by the run that paused)."""
    if isinstance(input, str):
        return {}
    return {a.call_id: a.name for a in map(_ask, input.get_interruptions())}
