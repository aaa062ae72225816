"""Remote A2A agents as tools (docs/a2a.md#remote-a2a-agents-as-tools): each
``[[agents.a2a]]`` entry of the registry (``name``, ``url``, optional ``token``,
``description``, ``timeout_s``) becomes a function tool of its agent taking one ``message``;
a call sends it to the remote agent with the official a2a-sdk client (``message/send``, one
new context per call, ``Authorization: Bearer <token>`` when a token is given) and returns
the remote task's reply artifact (or why the task did not complete). Bounded by
``timeout_s`` (default 120 s); every failure is the tool's output, never a raised error.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import orjson
from agents import FunctionTool, RunContextWrapper

TIMEOUT_S = 120.0
PARAMS = {"type": "object", "additionalProperties": False, "required": ["message"],
          "properties": {"message": {"type": "string",
                                     "description": "what to ask the remote agent"}}}


def remote_tool(entry: dict[str, Any]) -> FunctionTool:
    """The tool of one checked ``[[agents.a2a]]`` entry (sessions/registry.py)."""
    url, token = str(entry["url"]), str(entry.get("token", ""))
    timeout = float(entry.get("timeout_s", TIMEOUT_S))

    async def invoke(_ctx: RunContextWrapper[Any], args: str) -> str:
        try:
            message = str(orjson.loads(args)["message"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return "error: the tool takes {\"message\": \"...\"}"
        try:
            async with asyncio.timeout(timeout):
                return await ask(url, token, message, timeout)
        except TimeoutError:
            return f"error: the remote agent did not answer within {timeout:.0f} s"
        except Exception as exc:  # the remote's trouble is the tool's output, not the turn's
            return f"error: the remote agent failed: {type(exc).__name__}: {exc}"[:2000]

    return FunctionTool(
        name=str(entry["name"]),
        description=str(entry.get("description") or f"Ask the remote A2A agent at {url}."),
        params_json_schema=PARAMS, on_invoke_tool=invoke, strict_json_schema=True)


async def ask(url: str, token: str, message: str, http_timeout: float) -> str:
    """Send ``message`` to the A2A agent at ``url`` (its card's base URL); its reply text."""
    from a2a.client import ClientConfig, create_client
    from a2a.helpers.proto_helpers import get_artifact_text
    from a2a.types import Message, Part, Role, SendMessageRequest, TaskState

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=http_timeout, headers=headers) as http:
        client = await create_client(url, ClientConfig(streaming=False, httpx_client=http))
        try:
            req = SendMessageRequest(message=Message(
                message_id=uuid.uuid4().hex, role=Role.ROLE_USER, parts=[Part(text=message)]))
            last = None
            async for event in client.send_message(req):
                last = event
        finally:
            await client.close()
    if last is None:
        return "error: the remote agent sent nothing"
    if last.HasField("message"):
        return "".join(p.text for p in last.message.parts)
    task = last.task
    text = "\n".join(get_artifact_text(a) for a in task.artifacts)
    if task.status.state == TaskState.TASK_STATE_COMPLETED:
        return text
    why = "".join(p.text for p in task.status.message.parts)
    return f"error: the remote task ended {TaskState.Name(task.status.state)}: {why or text}"
