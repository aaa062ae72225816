"""Agents for the MCP tests: the demo model plus one rule, so a turn can call any tool the
agent offers (its MCP servers' tools) without a paid model: "use tool NAME with {json}"."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from typing import Any

from agents import Agent, ModelSettings, Tool
from agents.agent_output import AgentOutputSchemaBase
from agents.handoffs import Handoff
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import ModelTracing
from agents.usage import Usage
from openai.types.responses import ResponseCompletedEvent, ResponseFunctionToolCall

from sessions.demo import DemoModel, _items, _output, _response, _text_of

USE = re.compile(r"\buse tool ([A-Za-z0-9_-]+)(?: with (\{.*\}))?", re.S)


def tool_call(items: list[Any], tools: list[Tool]) -> ResponseFunctionToolCall | None:
    """The rule: the last user message says "use tool NAME [with {json}]" and NAME is offered
    (not after a tool's output: the model then speaks)."""
    if not items or items[-1].get("type") == "function_call_output":
        return None
    users = [_text_of(i) for i in items if i.get("role") == "user"]
    m = USE.search(users[-1]) if users else None
    if m is None or m.group(1) not in {t.name for t in tools}:
        return None
    call = f"call_{secrets.token_hex(4)}"
    return ResponseFunctionToolCall(type="function_call", name=m.group(1), call_id=call,
                                    id=f"fc_{call}", arguments=m.group(2) or "{}")


class ToolRuleModel(DemoModel):
    async def get_response(self, system_instructions: str | None,
                           input: str | list[TResponseInputItem], model_settings: ModelSettings,
                           tools: list[Tool], output_schema: AgentOutputSchemaBase | None,
                           handoffs: list[Handoff], tracing: ModelTracing, *,
                           previous_response_id: str | None, conversation_id: str | None,
                           prompt: Any) -> ModelResponse:
        call = tool_call(_items(input), tools)
        if call is None:
            return await super().get_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt)
        return ModelResponse(output=[_output(call)], usage=Usage(), response_id=None)

    async def stream_response(self, system_instructions: str | None,
                              input: str | list[TResponseInputItem],
                              model_settings: ModelSettings, tools: list[Tool],
                              output_schema: AgentOutputSchemaBase | None,
                              handoffs: list[Handoff], tracing: ModelTracing, *,
                              previous_response_id: str | None, conversation_id: str | None,
                              prompt: Any) -> AsyncIterator[TResponseStreamEvent]:
        call = tool_call(_items(input), tools)
        if call is not None:
            yield ResponseCompletedEvent(type="response.completed", response=_response(call),
                                         sequence_number=0)
            return
        async for ev in super().stream_response(
                system_instructions, input, model_settings, tools, output_schema, handoffs,
                tracing, previous_response_id=previous_response_id,
                conversation_id=conversation_id, prompt=prompt):
            yield ev


def notes_agent() -> Agent[Any]:
    """A new agent per registration (the registry gives each its MCP servers); tool names are
    prefixed with their server's (``mcp_notes__add_note``), as two servers offer the same."""
    return Agent(name="notes", model=ToolRuleModel(word_delay=0.0),
                 instructions="Use the MCP tools you are given.",
                 mcp_config={"include_server_in_tool_names": True})
