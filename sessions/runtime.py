"""Running one turn with the OpenAI Agents SDK: agent loading, model choice, streaming."""

from __future__ import annotations

import copy
import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
from agents import Agent, ModelProvider, RunConfig, Runner, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI, DefaultAsyncHttpxClient
from openai.types.responses import ResponseTextDeltaEvent

from sessions import sdk_speedups
from sessions.demo import DemoProvider
from sessions.memory import RedisMemory

MAX_MODEL_CONNECTIONS = 2_000
"""HTTP connections the worker's OpenAI client may hold: each streaming turn holds one for
its whole reply, and a worker runs up to ``AGENTIA_CONCURRENCY`` (1,000) turns at once."""


@dataclass(frozen=True, slots=True)
class ModelConfig:
    api_key: str | None = None
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    demo_word_delay: float = 0.03
    tracing: bool = False

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
    else:
        provider = _DefaultModel(OpenAIProvider(openai_client=openai_client(cfg),
                                                use_responses=False), cfg.model)
    _RUN_CONFIG[:] = [provider, RunConfig(model_provider=provider,
                                          tracing_disabled=not tracing)]
    return provider


def openai_client(cfg: ModelConfig) -> AsyncOpenAI:
    """One client (one connection pool) for every turn of the worker, allowing
    :data:`MAX_MODEL_CONNECTIONS` streams at once. The OpenAI client's default (1,000, 100
    kept alive) would queue a worker's turns behind others' whole replies at its
    concurrency, and reconnect for most turns."""
    limits = httpx2.Limits(max_connections=MAX_MODEL_CONNECTIONS,
                          max_keepalive_connections=MAX_MODEL_CONNECTIONS, keepalive_expiry=30)
    http = DefaultAsyncHttpxClient(limits=limits, timeout=httpx2.Timeout(600, connect=10))
    return sdk_speedups.ChunkClient(api_key=cfg.api_key or "not-needed", base_url=cfg.base_url,
                                    http_client=http)


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
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str


async def stream_turn(agent: Agent[Any], text: str, memory: RedisMemory,
                      provider: ModelProvider) -> AsyncIterator[Delta | ToolCall]:
    """Run the agent on one user message, yielding text deltas and tool calls as they come."""
    result = Runner.run_streamed(_per_run(agent), input=text, session=memory,
                                 run_config=run_config(provider))
    try:
        async for ev in result.stream_events():
            if ev.type == "raw_response_event" and isinstance(ev.data, ResponseTextDeltaEvent):
                yield Delta(ev.data.delta)
            elif ev.type == "run_item_stream_event" and ev.name == "tool_called":
                yield ToolCall(str(getattr(ev.item.raw_item, "name", "tool")))
    finally:
        if not result.is_complete:
            result.cancel()
