"""A local OpenAI-compatible model: the Chat Completions streaming protocol, at a chosen pace.

The paid API is out of reach in tests and benchmarks; the OpenAI client, the Agents SDK and
the worker in front of this stub are the real ones. Every stream advances on one shared clock
(one timer for all streams, not one per token), so a thousand slow streams cost the stub a
few percent of a core, not the worker's share of the box. HTTP/1.1 keep-alive with chunked
bodies, as the OpenAI client expects from api.openai.com.

    python -m loadtest.openai_stub --tokens-per-s 50 --reply-tokens 100   # prints
    OPENAI_STUB_READY port=PORT base_url=http://127.0.0.1:PORT/v1

``--tokens-per-s 0`` streams a whole reply at once (tests). The reply is ``--reply-tokens``
words (a token is a word with its leading space), ``--tokens-per-chunk`` of them per SSE event.
A reply function may answer :class:`ToolCalls` instead of text: the stub then streams the model
calling those tools, as the API does (a ``tool_calls`` delta naming each call, its arguments in
pieces, ``finish_reason: "tool_calls"``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class ToolCalls:
    """What a reply function answers for the model to call tools: ``(call id, function name,
    arguments JSON text)`` each."""
    calls: list[tuple[str, str, str]]


Reply = Callable[[list[dict[str, Any]]], str | ToolCalls]
ARGUMENT_PIECE = 8
"""Characters of a tool call's arguments per SSE event (the API splits them too)."""
MAX_BODY = 16 * 2**20
DONE = b"data: [DONE]\n\n"
BACKLOG = 16_384
"""Bytes a stream may have unread by its client before the stub stops producing for it."""


def next_due(due: float, now: float, interval: float) -> float:
    """The clock's next tick after the one due at ``due``: one ``interval`` later, or, when the
    stub fell more than an interval behind (its process stalled), one interval from ``now``: the
    ticks missed are skipped, not sent back to back (a model's pace does not burst)."""
    due += interval
    return due if due >= now else now + interval


def filler(tokens: int) -> Reply:
    """A reply of ``tokens`` words whatever was said."""
    text = " ".join(f"w{n % 1000}" for n in range(tokens))
    return lambda messages: text


@dataclass(slots=True)
class _Stream:
    writer: asyncio.StreamWriter
    model: str
    words: list[str]
    sent: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    data = b"data: " + orjson.dumps({
        "id": "c1", "object": "chat.completion.chunk", "created": 0, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + b"\n\n"
    return b"%x\r\n%s\r\n" % (len(data), data)


def _tool_call_chunks(model: str, answer: ToolCalls) -> list[bytes]:
    """The SSE events of a model calling tools: per call one delta with its id and name, then
    its arguments in pieces; then the finish and ``[DONE]``."""
    out = []
    for n, (call_id, name, arguments) in enumerate(answer.calls):
        head: dict[str, Any] = {"tool_calls": [{"index": n, "id": call_id, "type": "function",
                                                "function": {"name": name, "arguments": ""}}]}
        if n == 0:
            head["role"] = "assistant"
        out.append(_chunk(model, head))
        for i in range(0, len(arguments), ARGUMENT_PIECE):
            piece = arguments[i:i + ARGUMENT_PIECE]
            out.append(_chunk(model, {"tool_calls": [{"index": n,
                                                      "function": {"arguments": piece}}]}))
    out.append(_chunk(model, {}, "tool_calls") + b"%x\r\n%s\r\n0\r\n\r\n" % (
        len(DONE), DONE))
    return out


class OpenAIStub:
    """Serves ``POST .../chat/completions`` with ``stream: true``; records request bodies
    (the last ``keep`` of them)."""

    def __init__(self, reply: Reply, tokens_per_s: float = 0.0, tokens_per_chunk: int = 1,
                 keep: int = 1000) -> None:
        self.reply = reply
        self.interval = 1 / tokens_per_s * tokens_per_chunk if tokens_per_s > 0 else 0.0
        self.per_chunk = max(1, tokens_per_chunk)
        self.keep = keep
        self.requests: list[dict[str, Any]] = []
        self.streams: list[_Stream] = []
        self.server: asyncio.Server | None = None
        self.served = 0
        self._clock: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def start(self, port: int = 0) -> OpenAIStub:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", port, backlog=4096)
        if self.interval:
            self._clock = asyncio.create_task(self._tick())
        return self

    async def stop(self) -> None:
        """Stop serving: the streams still open are closed (their clients see the connection
        end mid-reply) and their handlers end, rather than being cancelled at the loop's end."""
        if self._clock:
            self._clock.cancel()
        for s in self.streams:
            s.writer.close()
            s.done.set()
        self.streams = []
        if self.server:
            self.server.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError, ValueError,
                                 asyncio.LimitOverrunError):
            while body := await self._request(reader):
                self.requests.append(body)
                del self.requests[:-self.keep]
                await self._respond(writer, body)
        writer.close()

    @staticmethod
    async def _request(reader: asyncio.StreamReader) -> dict[str, Any] | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # the client closed its kept-alive connection
        length = 0
        for line in head.decode("latin-1").split("\r\n"):
            if line.lower().startswith("content-length:"):
                length = int(line.split(":", 1)[1])
        if not 0 < length <= MAX_BODY:
            raise ValueError("no body")
        body: dict[str, Any] = orjson.loads(await reader.readexactly(length))
        return body

    async def _respond(self, writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                     b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")
        answer = self.reply(body.get("messages", []))
        model = str(body.get("model", "stub"))
        if isinstance(answer, ToolCalls):
            for chunk in _tool_call_chunks(model, answer):
                writer.write(chunk)
            await writer.drain()
            self.served += 1
            return
        stream = _Stream(writer, model, answer.split(" "))
        if not self.interval:
            while self._advance(stream):
                await writer.drain()
        else:
            self.streams.append(stream)
            await stream.done.wait()
            if writer.is_closing():
                return  # its client left, or the stub stopped
        await writer.drain()
        self.served += 1

    def _advance(self, s: _Stream) -> bool:
        """Write the stream's next chunk; False once its end is written."""
        if s.sent < len(s.words):
            part = s.words[s.sent:s.sent + self.per_chunk]
            text = " ".join(part) if s.sent == 0 else " " + " ".join(part)
            delta = {"content": text, "role": "assistant"} if s.sent == 0 else {"content": text}
            s.writer.write(_chunk(s.model, delta))
            s.sent += len(part)
            return True
        s.writer.write(_chunk(s.model, {}, "stop") + b"%x\r\n%s\r\n0\r\n\r\n" % (
            len(DONE), DONE))
        return False

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = next_due(due, loop.time(), self.interval)
            await asyncio.sleep(max(0.0, due - loop.time()))
            live = []
            for s in self.streams:
                if s.writer.is_closing():
                    s.done.set()
                elif s.writer.transport.get_write_buffer_size() > BACKLOG:
                    live.append(s)  # its reader is behind: wait for it, as a server would
                elif self._advance(s):
                    live.append(s)
                else:
                    s.done.set()
            self.streams = live


async def _main(a: argparse.Namespace) -> None:
    stub = await OpenAIStub(filler(a.reply_tokens), a.tokens_per_s,
                            a.tokens_per_chunk).start(a.port)
    print(f"OPENAI_STUB_READY port={stub.port} base_url={stub.base_url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await stub.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--tokens-per-s", type=float, default=50.0, help="per stream; 0: at once")
    ap.add_argument("--reply-tokens", type=int, default=100)
    ap.add_argument("--tokens-per-chunk", type=int, default=1)
    a = ap.parse_args()
    with contextlib.suppress(ImportError):
        import uvloop
        uvloop.install()
    asyncio.run(_main(a))


if __name__ == "__main__":
    main()
