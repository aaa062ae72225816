"""A Chat Completions model whose stream skips the OpenAI client's per-chunk work
(``AGENTIA_MODEL_CLIENT=lean``).

The SDK's :class:`OpenAIChatCompletionsModel` builds the request (messages, tools, settings)
and turns chunks into Responses stream events with its own handler, so the events are the
SDK's by construction. What this model changes is the stream between them: the OpenAI client
still sends the request (its retries, headers and status errors: a 429 or 5xx raises the same
``openai.APIStatusError`` subclass), but the body is read as bytes and decoded by
:mod:`sessions.lean_chunks` (lines split by :class:`sdk_speedups.LineSplitter`, one
``orjson.loads`` per read, the text-only chunks of one read merged into one, chunks built
without validation): the client's SSE decoder, its chunk parsing and the SDK handler's
per-chunk work are paid per read, not per token.

**Text past the handler** (:class:`TextTap`): a caller that hands the model a tap before the
call (the direct path, sessions/direct_run.py) gets the text of a plain reply straight from
the bytes once the handler has opened the reply's text part: those chunks build no chunk
object and no SDK event (the handler's work per chunk was ~35 % of the model stream's CPU).
The handler still sees every byte of text, later and merged: before the next chunk that is not
plain text (the reply's end, a tool call) it gets one chunk of all the text it missed, and
its events for that chunk (one text delta) follow :meth:`TextTap.caught_up`. So the events are
those of the same stream cut into other chunks, and the final response is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Callable
from typing import Any, Protocol

import httpx2
from agents.models.interface import Model, ModelProvider
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from openai import APIConnectionError, APITimeoutError, AsyncOpenAI
from openai._utils import is_given
from openai.types.chat import ChatCompletionChunk

from sessions import sdk_speedups
from sessions.coalescer import busy_window

# the chunks' decoding, moved to its own module (callers use these names from here too)
from sessions.lean_chunks import PlainDelta as PlainDelta
from sessions.lean_chunks import SSEDecoder as SSEDecoder
from sessions.lean_chunks import TextSplit, chunk_of, text_only
from sessions.lean_chunks import build as build
from sessions.lean_chunks import merge_text as merge_text
from sessions.model_http import WIRE_EXTENSION, WireBody, WireTransport, proxied

log = logging.getLogger("agentia.worker")


class TextTap(Protocol):
    """Where a :class:`LeanStream` gives the text that skips the SDK's handler (module
    docstring), in the stream's order with the handler's events."""

    def text(self, text: str) -> None:
        """Text of the reply, after the events before it."""

    def caught_up(self) -> None:
        """The handler's next event is the text delta of what :meth:`text` gave already."""

    def full(self) -> bool:
        """Too much waits for the consumer: the stream waits for :meth:`room`."""

    async def room(self) -> None:
        """Until the consumer has taken enough."""


class LeanProvider(ModelProvider):
    """Gives :class:`LeanChatModel`\\ s of ``clients`` (alike but for their connection
    pools), taken in turn: the SDK asks for a model for each model call.

    Several clients (several connection pools) rather than one: httpcore's pool looks at every
    connection it holds, and for each idle one counts them all again, whenever a request starts
    or ends; with a worker's ~1,000 streams in one pool that was the largest CPU cost of a
    streamed turn in a profile (docs/benchmarks.md). ``len(clients)`` pools of a
    ``1/len(clients)`` share each make that ``len(clients)``\\ ² times less.

    ``wire`` (the default): the clients send through one :class:`model_http.WireTransport`
    (at most ``connections`` open) instead of their own httpx pools, unless the environment
    sends the endpoint through a proxy (that transport does not speak to proxies)."""

    def __init__(self, clients: list[AsyncOpenAI], read_every: float = 0.0, *,
                 wire: bool = True, connections: int = 2_000) -> None:
        if wire and clients and proxied(str(clients[0].base_url)):
            log.info("model endpoint behind a proxy: the lean model keeps httpx's transport")
            wire = False
        if wire:
            transport = WireTransport(connections)
            clients = [c.copy(http_client=httpx2.AsyncClient(transport=transport))
                       for c in clients]
        self.clients, self.read_every = clients, read_every
        self._turn = itertools.cycle(clients)

    def get_model(self, model_name: str | None) -> Model:
        return LeanChatModel(model_name or "gpt-4o-mini", next(self._turn),
                             read_every=self.read_every)


class LeanChatModel(OpenAIChatCompletionsModel):
    """:class:`OpenAIChatCompletionsModel` with the lean stream (module docstring).
    ``read_every``: as :class:`sdk_speedups.MergingSSEDecoder`'s (seconds; 0 reads as data
    comes)."""

    def __init__(self, model: str, openai_client: AsyncOpenAI, *, read_every: float = 0.0,
                 **kwargs: Any) -> None:
        super().__init__(model, openai_client, **kwargs)
        self.read_every = read_every
        self.tap: TextTap | None = None
        """For the next streamed call only (taken by it): where its plain text goes."""

    def _get_client(self) -> AsyncOpenAI:
        client = super()._get_client()
        return _LeanClient(client, self)  # type: ignore[return-value]


class _LeanClient:
    """The OpenAI client as the SDK model sees it, except that a streamed
    ``chat.completions.create`` gives a :class:`LeanStream`."""

    def __init__(self, client: AsyncOpenAI, model: LeanChatModel) -> None:
        self._client, self._model = client, model
        self.chat = self
        self.completions = self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create(self, **kwargs: Any) -> Any:
        if kwargs.get("stream") is not True:
            return await self._client.chat.completions.create(**kwargs)
        opened = self._client.chat.completions.with_streaming_response.create(
            **untransformed(kwargs))
        tap, self._model.tap = self._model.tap, None
        api_response = await opened.__aenter__()  # status errors are raised here, as usual
        return LeanStream(api_response.http_response, opened.__aexit__,
                          self._model.read_every, tap)


_CALL_ARGS = frozenset({"extra_headers", "extra_query", "extra_body", "timeout"})
_MAX_DEPTH = 64


def untransformed(kwargs: dict[str, Any]) -> dict[str, Any]:
    """``chat.completions.create``'s arguments with the request's body in ``extra_body``
    when it is plain JSON (dicts, lists, strings, numbers), else ``kwargs``: the OpenAI client
    walks every argument against its type hints (every message against every message type,
    to rename aliased keys: Chat Completions has none) before it sends it, ~15 % of a
    streaming worker's CPU with 1,000 turns (py-spy); ``extra_body`` is sent as it is, merged
    over the rest as the client merges it (later keys win, omitted ones dropped)."""
    body: dict[str, Any] = {}
    call: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in _CALL_ARGS:
            call[name] = value
        elif is_given(value):
            body[name] = value
    if type(body.get("model")) is not str or not _plain(body, 0):
        return kwargs
    extra = call.get("extra_body")
    call["extra_body"] = body if not extra else {**body, **extra}
    return {"model": body["model"], "messages": [], "stream": kwargs.get("stream"), **call}


def _plain(value: Any, depth: int) -> bool:
    """Whether ``value`` is JSON as the client would send it after its walk (unchanged)."""
    kind = type(value)
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return True
    if depth > _MAX_DEPTH:
        return False
    if kind is dict:
        return all(type(k) is str and _plain(v, depth + 1) for k, v in value.items())
    if kind is list:
        return all(_plain(v, depth + 1) for v in value)
    return False


class LeanStream:
    """The chunks of one streamed reply (an async iterator, closed with :meth:`aclose`)."""

    def __init__(self, response: httpx2.Response, close: Any, read_every: float,
                 tap: TextTap | None = None) -> None:
        self.response = response  # the SDK reads its x-request-id
        self._close = close
        self._read_every = read_every
        self._tap = tap
        self._texting = False  # whether the last batch ended with text (read_every waits)
        self._chunks = self._stream()

    def __aiter__(self) -> LeanStream:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            await self._close(None, None, None)

    async def _stream(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        decoder = SSEDecoder()
        split = TextSplit() if self._tap is not None else None
        try:
            async with contextlib.aclosing(self._reads()) as reads:
                async for data in reads:
                    if split is not None and split.skipping \
                            and (text := decoder.feed_text(data)) is not None:
                        await self._text(split, text, decoder)
                        continue
                    bodies = decoder.feed(data)
                    if split is not None:
                        caught, bodies = await self._tapped(split, bodies)
                        if caught is not None:
                            yield caught
                    else:
                        self._texting = bool(bodies) and text_only(bodies[-1])
                    for chunk in merge_text(bodies):
                        yield chunk
                    if decoder.done:
                        break
                if decoder.done:  # the rest of the body, so the connection can be reused
                    async for _ in reads:
                        pass
                    bodies = []
                else:
                    bodies = decoder.finish()
                if split is not None:  # the text the handler has not seen, at the end
                    caught, bodies = await self._tapped(split, bodies, end=True)
                    if caught is not None:
                        yield caught
                for chunk in merge_text(bodies):
                    yield chunk
        except httpx2.TimeoutException as err:
            raise APITimeoutError(request=self.response.request) from err
        except httpx2.RequestError as err:
            raise APIConnectionError(request=self.response.request) from err

    async def _text(self, split: TextSplit, text: str, decoder: SSEDecoder) -> None:
        """A read of text chunks only, as text to the tap (the handler catches up later)."""
        tap = self._tap
        assert tap is not None and decoder.template is not None
        split.text(text, decoder.template)
        self._texting = True
        if text:
            tap.text(text)
            if tap.full():
                await tap.room()

    async def _tapped(self, split: TextSplit, bodies: list[dict[str, Any]], end: bool = False,
                      ) -> tuple[ChatCompletionChunk | None, list[dict[str, Any]]]:
        """What of ``bodies`` goes to the handler: the catch-up chunk (announced to the tap;
        given on its own, never merged with later text) when the handler has text to catch up
        on before them, and the bodies. The text that skips it goes to the tap (module
        docstring)."""
        tap = self._tap
        assert tap is not None
        text, bodies = split.split(bodies)
        if text:
            tap.text(text)
            self._texting = not bodies
            if tap.full():
                await tap.room()
        elif bodies:
            self._texting = text_only(bodies[-1])
        if (bodies or end) and (caught := split.catch_up()) is not None:
            tap.caught_up()
            return chunk_of(caught), bodies
        return None, bodies

    async def _reads(self) -> AsyncGenerator[bytes, None]:
        """The body as it comes, or with ``read_every`` in batches (as the merging decoder)."""
        wire = self.response.extensions.get(WIRE_EXTENSION)
        if isinstance(wire, WireBody) and self.response.headers.get(
                "content-encoding", "identity") == "identity":
            async for data in self._wire_reads(wire):
                yield data
            return
        raw = self.response.aiter_bytes()
        if not self._read_every:
            async for data in raw:
                yield data
            return
        async with contextlib.aclosing(sdk_speedups.paced_reads(
                raw, self._read_every, lambda: self._texting)) as reads:
            async for data in reads:
                yield data

    async def _wire_reads(self, body: WireBody) -> AsyncGenerator[bytes, None]:
        """The body straight off :class:`model_http.WireBody`: its connection holds what comes
        meanwhile, so pacing needs no task of its own (``paced_reads``'s pump). With many
        streams open the pacing is the chunk flusher's busy tick (sessions/coalescer.py)."""
        STREAMS[0] += 1
        try:
            while data := await body.read():
                yield data
                if self._read_every and self._texting:
                    body.hold()  # what comes meanwhile: one socket read, not one a token
                    await PACE.wait(busy_window(self._read_every, STREAMS[0]), body.unhold)
        finally:
            STREAMS[0] -= 1


STREAMS = [0]
"""Lean streams being read over the wire in this process (the busy pacing's measure)."""


class Pace:
    """The read pacing's wake-ups: the streams waiting for their next read wait on one timer
    (a future each, set together), not on a timer each (``asyncio.sleep``: a timer started
    per read per stream). Streams that read at one tick wait for the next together, so each
    still reads about once a window.

    At the tick each waiting stream's connection reads its socket again (``release``) and the
    streams wake :data:`SETTLE` later, when the loop has read what came meanwhile: a stream
    wakes once per read to find its bytes, not once to resume its socket and again when the
    bytes come."""

    __slots__ = ("_loop", "_timer", "_waiting")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._waiting: list[tuple[asyncio.Future[None], Callable[[], None] | None]] = []
        """At most one per stream."""

    def wait(self, window: float, release: Callable[[], None] | None = None,
             ) -> asyncio.Future[None]:
        """Done :data:`SETTLE` after the next tick (``window`` seconds from now if none is
        due), ``release`` called at the tick."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # another event loop (tests): nothing of the last one
            self._loop, self._timer, self._waiting = loop, None, []
        waiter = loop.create_future()
        self._waiting.append((waiter, release))
        if self._timer is None:
            self._timer = loop.call_later(window, self._tick, loop)
        return waiter

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        waiting, self._waiting = self._waiting, []
        for waiter, release in waiting:
            if release is not None and not waiter.done():  # a cancelled reader's is done
                release()
        loop.call_later(SETTLE, _wake, waiting)


def _wake(waiting: list[tuple[asyncio.Future[None], Callable[[], None] | None]]) -> None:
    for waiter, _ in waiting:
        if not waiter.done():
            waiter.set_result(None)


SETTLE = 0.002
"""Seconds from a pacing tick, when the streams' sockets are read again, to their wake-up."""


PACE = Pace()
"""The lean streams' read pacing in this process."""
