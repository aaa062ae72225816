"""A local server that speaks the Chat Completions streaming protocol (the paid API is out of
reach in tests; the OpenAI client, the Agents SDK and our worker are real)."""

from __future__ import annotations

import asyncio
import json
from typing import Any


class ChatCompletionsStub:
    """Streams ``reply(messages)`` word by word as ``chat.completion.chunk`` SSE events."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.server: asyncio.Server | None = None

    @property
    def base_url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> ChatCompletionsStub:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    @staticmethod
    def reply(messages: list[dict[str, Any]]) -> str:
        users = [m["content"] for m in messages if m.get("role") == "user"]
        return f"stub heard {len(users)} user messages, last: {users[-1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.decode().split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        body = json.loads(await reader.readexactly(length))
        self.requests.append(body)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Connection: close\r\n\r\n")
        words = self.reply(body["messages"]).split(" ")
        for n, word in enumerate(words):
            delta = {"content": word if n == 0 else " " + word}
            if n == 0:
                delta["role"] = "assistant"
            self._event(writer, {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                                 "model": body["model"], "choices": [
                                     {"index": 0, "delta": delta, "finish_reason": None}]})
            await writer.drain()
        self._event(writer, {"id": "c1", "object": "chat.completion.chunk", "created": 0,
                             "model": body["model"], "choices": [
                                 {"index": 0, "delta": {}, "finish_reason": "stop"}]})
        writer.write(b"data: [DONE]\n\n")
        await writer.drain()
        writer.close()

    @staticmethod
    def _event(writer: asyncio.StreamWriter, obj: dict[str, Any]) -> None:
        writer.write(b"data: " + json.dumps(obj).encode() + b"\n\n")
