"""A Chat Completions model whose stream skips the OpenAI client's per-chunk work
(``AGENTIA_MODEL_CLIENT=lean``).

The SDK's :class:`OpenAIChatCompletionsModel` builds the request (messages, tools, settings)
and turns chunks into Responses stream events with its own handler, so the events are the
SDK's by construction. What this model changes is the stream between them: the OpenAI client
still sends the request (its retries, headers and status errors: a 429 or 5xx raises the same
``openai.APIStatusError`` subclass), but the body is read as bytes and decoded here. Lines
are split by :class:`sdk_speedups.LineSplitter`, each ``data:`` line is one ``orjson.loads``,
the text-only chunks of one read are merged into one, and chunks are built as pydantic's
``model_construct`` builds them (no validation; not the OpenAI models' ``construct``, which
converts field by field at ~20 us a chunk: :func:`build`): the client's SSE
decoder, its chunk parsing and the SDK handler's per-chunk work are paid per read, not per
token. Chunks of a shape this module does not know (logprobs, audio, anything unexpected)
go through the client's own lenient construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator
from typing import Any, ClassVar, TypeVar, cast

import httpx2
import orjson
import pydantic
from agents.models.interface import Model, ModelProvider
from agents.models.openai_chatcompletions import OpenAIChatCompletionsModel
from openai import APIConnectionError, APIError, APITimeoutError, AsyncOpenAI
from openai._models import construct_type
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.chat_completion_chunk import (
    Choice,
    ChoiceDelta,
    ChoiceDeltaToolCall,
    ChoiceDeltaToolCallFunction,
)
from openai.types.completion_usage import (
    CompletionTokensDetails,
    CompletionUsage,
    PromptTokensDetails,
)

from sessions import sdk_speedups
from sessions.model_http import WIRE_EXTENSION, WireBody, WireTransport, proxied

log = logging.getLogger("agentia.worker")

_M = TypeVar("_M", bound=pydantic.BaseModel)
_DELTA_KEYS = frozenset({"content", "role", "refusal", "tool_calls", "function_call"})
_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason", "logprobs"})


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

    def _get_client(self) -> AsyncOpenAI:
        client = super()._get_client()
        return _LeanClient(client, self.read_every)  # type: ignore[return-value]


class _LeanClient:
    """The OpenAI client as the SDK model sees it, except that a streamed
    ``chat.completions.create`` gives a :class:`LeanStream`."""

    def __init__(self, client: AsyncOpenAI, read_every: float) -> None:
        self._client, self._read_every = client, read_every
        self.chat = self
        self.completions = self

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def create(self, **kwargs: Any) -> Any:
        if kwargs.get("stream") is not True:
            return await self._client.chat.completions.create(**kwargs)
        opened = self._client.chat.completions.with_streaming_response.create(**kwargs)
        api_response = await opened.__aenter__()  # status errors are raised here, as usual
        return LeanStream(api_response.http_response, opened.__aexit__, self._read_every)


class LeanStream:
    """The chunks of one streamed reply (an async iterator, closed with :meth:`aclose`)."""

    def __init__(self, response: httpx2.Response, close: Any, read_every: float) -> None:
        self.response = response  # the SDK reads its x-request-id
        self._close = close
        self._read_every = read_every
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
        try:
            async with contextlib.aclosing(self._reads()) as reads:
                async for data in reads:
                    chunks = merge_text(decoder.feed(data))
                    self._texting = bool(chunks) and _text_only_chunk(chunks[-1])
                    for chunk in chunks:
                        yield chunk
                    if decoder.done:
                        break
                if decoder.done:  # the rest of the body, so the connection can be reused
                    async for _ in reads:
                        pass
                else:
                    for chunk in merge_text(decoder.finish()):
                        yield chunk
        except httpx2.TimeoutException as err:
            raise APITimeoutError(request=self.response.request) from err
        except httpx2.RequestError as err:
            raise APIConnectionError(request=self.response.request) from err

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
        meanwhile, so pacing needs no task of its own (``paced_reads``'s pump)."""
        while data := await body.read():
            yield data
            if self._read_every and self._texting:
                await asyncio.sleep(self._read_every)


def _text_only_chunk(chunk: ChatCompletionChunk) -> bool:
    choices = chunk.choices
    if len(choices) != 1 or chunk.usage is not None:
        return False
    choice = choices[0]
    delta = choice.delta
    return choice.finish_reason is None and delta.content is not None \
        and not delta.tool_calls and delta.role is None and not delta.refusal


class SSEDecoder:
    """Server-sent events of a Chat Completions stream, as the JSON objects they carry. An
    error object in the stream raises ``openai.APIError`` as the OpenAI client does; ``[DONE]``
    ends the stream (:attr:`done`)."""

    __slots__ = ("_data", "_lines", "done")

    def __init__(self) -> None:
        self._lines = sdk_speedups.LineSplitter()
        self._data: list[bytes] = []
        self.done = False

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return self._events(self._lines.feed(chunk))

    def finish(self) -> list[dict[str, Any]]:
        return self._events([*self._lines.finish(), b""])

    def _events(self, lines: list[bytes]) -> list[dict[str, Any]]:
        if not self._data and not self.done and len(lines) % 2 == 0 and not any(lines[1::2]):
            fast = self._data_events(lines[0::2])
            if fast is not None:
                return fast
        out: list[dict[str, Any]] = []
        for line in lines:
            if self.done:
                break
            if line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif not line and self._data:
                data, self._data = b"\n".join(self._data), []
                if data.startswith(b"[DONE]"):
                    self.done = True
                    break
                out.append(_checked(orjson.loads(data)))
        return out


    def _data_events(self, firsts: list[bytes]) -> list[dict[str, Any]] | None:
        """The usual read (events of one ``data: `` line each, the last maybe ``[DONE]``)
        parsed with one ``orjson.loads`` for all; None for anything else."""
        datas = [line[6:] for line in firsts if line[:6] == b"data: "]
        if len(datas) != len(firsts) or not datas:
            return None
        done = datas[-1].startswith(b"[DONE]")
        if done:
            datas.pop()
        try:
            bodies: list[Any] = orjson.loads(b"[" + b",".join(datas) + b"]")
        except orjson.JSONDecodeError:
            return None  # a [DONE] or text not JSON inside: event by event
        if not all(type(b) is dict and not b.get("error") for b in bodies):
            return None
        self.done = done
        return bodies


def _checked(body: Any) -> dict[str, Any]:
    if isinstance(body, dict) and body.get("error"):
        error = body["error"]
        message = error.get("message") if isinstance(error, dict) else None
        if not message or not isinstance(message, str):
            message = "An error occurred during streaming"
        raise APIError(message=message, request=httpx2.Request("POST", "/chat/completions"),
                       body=error)
    if not isinstance(body, dict):
        raise APIError(message="A stream event is not a JSON object",
                       request=httpx2.Request("POST", "/chat/completions"), body=body)
    return body


def merge_text(bodies: list[dict[str, Any]]) -> list[ChatCompletionChunk]:
    """The chunks of ``bodies``, each run of text-only chunks made one chunk of its joined
    text (order and content unchanged)."""
    out: list[ChatCompletionChunk] = []
    run: list[dict[str, Any]] = []
    for body in bodies:
        if _text_only(body):
            run.append(body)
            continue
        if run:
            out.append(_merged(run))
            run = []
        out.append(chunk_of(body))
    if run:
        out.append(_merged(run))
    return out


def _text_only(body: dict[str, Any]) -> bool:
    choices = body.get("choices")
    if type(choices) is not list or len(choices) != 1 or body.get("usage") is not None:
        return False
    choice = choices[0]
    if type(choice) is not dict or choice.get("finish_reason") is not None \
            or choice.get("logprobs") is not None or not choice.keys() <= _CHOICE_KEYS:
        return False
    delta = choice.get("delta")
    return type(delta) is dict and len(delta) == 1 and type(delta.get("content")) is str


def _merged(run: list[dict[str, Any]]) -> ChatCompletionChunk:
    body = run[0]
    if len(run) > 1:
        body["choices"][0]["delta"]["content"] = "".join(
            b["choices"][0]["delta"]["content"] for b in run)
    return chunk_of(body)


def chunk_of(body: dict[str, Any]) -> ChatCompletionChunk:
    """The chunk ``body`` describes, built without validation when it has the usual shape,
    else by the OpenAI client's lenient construction."""
    try:
        choices = [_choice(c) for c in body.get("choices") or ()]
        usage = body.get("usage")
        fields = dict(body)
        fields["choices"] = choices
        fields["usage"] = None if usage is None else _usage(usage)
        fields.setdefault("object", "chat.completion.chunk")
        return build(ChatCompletionChunk, **fields)
    except _Unusual:
        return cast(ChatCompletionChunk, construct_type(type_=ChatCompletionChunk, value=body))


_DEFAULTS: dict[type[pydantic.BaseModel], tuple[dict[str, Any], frozenset[str]] | None] = {}
_IMMUTABLE = (type(None), str, int, float, bool)


def build(cls: type[_M], **values: Any) -> _M:
    """``cls`` with ``values``, built as ``pydantic.BaseModel.model_construct`` builds it (the
    fields' defaults for the rest, unknown names as extra fields) with the per-class work
    done once: ~1 us a model. A class with a default that is not a plain constant goes through
    ``model_construct`` itself (it copies such defaults)."""
    if cls not in _DEFAULTS:
        fields = cls.model_fields
        plain = all(f.is_required() or (f.default_factory is None
                                         and isinstance(f.default, _IMMUTABLE))
                    for f in fields.values())
        _DEFAULTS[cls] = ({n: f.default for n, f in fields.items() if not f.is_required()},
                          frozenset(fields)) if plain else None
    known = _DEFAULTS[cls]
    if known is None:
        return pydantic.BaseModel.model_construct.__func__(cls, **values)  # type: ignore[attr-defined,no-any-return]
    defaults, names = known
    extra: dict[str, Any] = {}
    if not values.keys() <= names:
        extra = {k: v for k, v in values.items() if k not in names}
        values = {k: v for k, v in values.items() if k in names}
    model = cls.__new__(cls)
    object.__setattr__(model, "__dict__", {**defaults, **values})
    object.__setattr__(model, "__pydantic_fields_set__", set(values))
    object.__setattr__(model, "__pydantic_extra__", extra)
    object.__setattr__(model, "__pydantic_private__", None)
    return model


class PlainDelta(ChoiceDelta):
    """A :class:`ChoiceDelta` of only the usual fields (content, role, refusal, tool calls:
    ``_choice`` sends any other to the client's construction), with the attributes the SDK's
    handler looks for on every chunk and it never has set to None on the class: each lookup
    of a missing one went through pydantic's ``__getattr__`` and an AttributeError (~10 % of
    the model stream's CPU in py-spy). The handler reads None and an absent attribute alike
    (``getattr(d, name, None)``, or ``hasattr`` then a truth test); the dump is the same."""

    thinking_blocks: ClassVar[None] = None
    reasoning_content: ClassVar[None] = None
    reasoning: ClassVar[None] = None
    annotations: ClassVar[None] = None


class _Unusual(Exception):
    """A chunk this module's fast construction does not cover."""


def _choice(c: Any) -> Choice:
    if type(c) is not dict or c.get("logprobs") is not None or not c.keys() <= _CHOICE_KEYS:
        raise _Unusual
    delta = c.get("delta")
    if type(delta) is not dict or not delta.keys() <= _DELTA_KEYS:
        raise _Unusual
    calls = delta.get("tool_calls")
    if calls is not None:
        delta = dict(delta)
        delta["tool_calls"] = [_tool_call(t) for t in calls]
    if delta.get("function_call") is not None:
        raise _Unusual
    return build(Choice, index=c.get("index", 0), delta=build(PlainDelta, **delta),
                 finish_reason=c.get("finish_reason"), logprobs=None)


def _tool_call(t: Any) -> ChoiceDeltaToolCall:
    if type(t) is not dict:
        raise _Unusual
    fn = t.get("function")
    fields = dict(t)
    if fn is not None:
        if type(fn) is not dict:
            raise _Unusual
        fields["function"] = build(ChoiceDeltaToolCallFunction, **fn)
    return build(ChoiceDeltaToolCall, **fields)


def _usage(u: Any) -> CompletionUsage:
    if type(u) is not dict:
        raise _Unusual
    fields = dict(u)
    prompt, completion = u.get("prompt_tokens_details"), u.get("completion_tokens_details")
    if prompt is not None:
        if type(prompt) is not dict:
            raise _Unusual
        fields["prompt_tokens_details"] = build(PromptTokensDetails, **prompt)
    if completion is not None:
        if type(completion) is not dict:
            raise _Unusual
        fields["completion_tokens_details"] = build(CompletionTokensDetails,
            **completion)
    return build(CompletionUsage, **fields)
