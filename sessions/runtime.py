"""Running one turn with the OpenAI Agents SDK: agent loading, model choice, streaming."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from agents import Agent, ModelProvider, RunConfig, Runner, set_tracing_disabled
from agents.models.openai_provider import OpenAIProvider
from openai import AsyncOpenAI
from openai.types.responses import ResponseTextDeltaEvent

from sessions.demo import DemoProvider
from sessions.memory import RedisMemory


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
    set_tracing_disabled(not (cfg.tracing and cfg.api_key))
    if cfg.demo:
        return DemoProvider(cfg.demo_word_delay)
    client = AsyncOpenAI(api_key=cfg.api_key or "not-needed", base_url=cfg.base_url)
    return _DefaultModel(OpenAIProvider(openai_client=client, use_responses=False), cfg.model)


class _DefaultModel(ModelProvider):
    """Fills in the configured model name for agents that do not name one."""

    def __init__(self, inner: ModelProvider, default: str) -> None:
        self.inner, self.default = inner, default

    def get_model(self, model_name: str | None) -> Any:
        return self.inner.get_model(model_name or self.default)


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    name: str


async def stream_turn(agent: Agent[Any], text: str, memory: RedisMemory,
                      provider: ModelProvider) -> AsyncIterator[Delta | ToolCall]:
    """Run the agent on one user message, yielding text deltas and tool calls as they come."""
    result = Runner.run_streamed(agent, input=text, session=memory,
                                 run_config=RunConfig(model_provider=provider))
    try:
        async for ev in result.stream_events():
            if ev.type == "raw_response_event" and isinstance(ev.data, ResponseTextDeltaEvent):
                yield Delta(ev.data.delta)
            elif ev.type == "run_item_stream_event" and ev.name == "tool_called":
                yield ToolCall(str(getattr(ev.item.raw_item, "name", "tool")))
    finally:
        if not result.is_complete:
            result.cancel()
