"""The chunks of a streamed Chat Completions reply, from the bytes up, for the lean model
(sessions/lean_model.py): server-sent events split and decoded (:class:`SSEDecoder`: one
``orjson.loads`` per read of one-line events), runs of text-only chunks merged
(:func:`merge_text`), and chunks built as pydantic's ``model_construct`` builds them
(:func:`chunk_of`, :func:`build`: no validation); a chunk of a shape this module does not know
(logprobs, audio, anything unexpected) goes through the OpenAI client's own lenient
construction."""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar, cast

import httpx2
import orjson
import pydantic
from openai import APIError
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
from sessions.sse_text import TextTemplate

_M = TypeVar("_M", bound=pydantic.BaseModel)
_DELTA_KEYS = frozenset({"content", "role", "refusal", "tool_calls", "function_call"})
_CHOICE_KEYS = frozenset({"index", "delta", "finish_reason", "logprobs"})
_PLAIN_DELTA = frozenset({"content", "role"})


class SSEDecoder:
    """Server-sent events of a Chat Completions stream, as the JSON objects they carry. An
    error object in the stream raises ``openai.APIError`` as the OpenAI client does; ``[DONE]``
    ends the stream (:attr:`done`).

    :meth:`feed_text`: the text of a read of plain text events straight from its bytes
    (sessions/sse_text.py), once a text event of the same bytes around its text was seen."""

    __slots__ = ("_data", "_learns", "_lines", "done", "template")

    def __init__(self) -> None:
        self._lines = sdk_speedups.LineSplitter()
        self._data: list[bytes] = []
        self.done = False
        self.template: TextTemplate | None = None
        self._learns = 0

    def feed(self, chunk: bytes) -> list[dict[str, Any]]:
        return self._events(self._lines.feed(chunk))

    def feed_text(self, chunk: bytes) -> str | None:
        """The text of ``chunk`` when it is only whole plain text events of the learned
        template (nothing else of it is kept: the caller takes it as text), else None and
        nothing is consumed (:meth:`feed` it)."""
        template = self.template
        if template is None or self._data or self.done or not self._lines.clean:
            return None
        return template.text(chunk)

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
        if self._learns < MAX_LEARNS:
            self._learn(datas, bodies)
        return bodies

    def _learn(self, datas: list[bytes], bodies: list[dict[str, Any]]) -> None:
        """The template of the last text event of a read, if the one known did not match
        it (at most :data:`MAX_LEARNS` tries a stream: a server whose events differ by more
        than their text stays on the usual decoding)."""
        for data, body in zip(reversed(datas), reversed(bodies), strict=True):
            if text_only(body):
                known = self.template
                if known is not None and known.text(b"data: " + data + b"\n\n") is not None:
                    return
                self._learns += 1
                self.template = TextTemplate.learn(data, body) or known
                return


MAX_LEARNS = 16
"""Text templates a :class:`SSEDecoder` tries to learn per stream, at most."""


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
        if text_only(body):
            run.append(body)
            continue
        if run:
            out.append(_merged(run))
            run = []
        out.append(chunk_of(body))
    if run:
        out.append(_merged(run))
    return out


def text_only(body: dict[str, Any]) -> bool:
    """Whether ``body`` is a chunk of text and nothing else (one choice, only ``content``)."""
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


class TextSplit:
    """Which chunks of one stream skip the SDK's handler (sessions/lean_model.py, "Text past
    the handler"). Text-only chunks do once the handler has opened the reply's text part and
    has seen nothing but plain text so far (then a text-only chunk changes nothing of its
    state but the text: one delta event, the text appended), and only the leading ones of a
    read (the handler has taken every chunk of the reads before when the next is read, so
    the text given is never ahead of its events). The first chunk that is not plain text turns
    this off for the rest of the stream."""

    __slots__ = ("_last", "_off", "_open", "_pending", "_template")

    def __init__(self) -> None:
        self._open = False
        self._off = False
        self._pending: list[str] = []
        self._last: dict[str, Any] | None = None
        self._template: TextTemplate | None = None  # builds ``_last`` when it is None

    @property
    def skipping(self) -> bool:
        """Whether the text chunks that come next skip the handler."""
        return self._open and not self._off

    def text(self, text: str, template: TextTemplate) -> None:
        """Text of a read of text chunks of ``template`` only (:meth:`SSEDecoder.feed_text`)
        that skips the handler (only while :attr:`skipping`)."""
        self._pending.append(text)
        self._last, self._template = None, template

    def split(self, bodies: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
        """The text of the leading ``bodies`` that skip the handler, and the rest (for it)."""
        if self._off:
            return "", bodies
        n = 0
        if self._open:
            while n < len(bodies) and text_only(bodies[n]):
                n += 1
        if n:
            self._last, self._template = bodies[n - 1], None
            text = "".join(b["choices"][0]["delta"]["content"] for b in bodies[:n])
            self._pending.append(text)
            bodies = bodies[n:]
        else:
            text = ""
        for body in bodies:
            if not self._off:
                self._see(body)
        return text, bodies

    def _see(self, body: dict[str, Any]) -> None:
        """``body`` goes to the handler: does its text part open, or is it not plain?"""
        if body.get("usage") is not None:
            self._off = True
            return
        choices = body.get("choices")
        if not choices:
            return  # the handler skips it
        if type(choices) is not list or len(choices) != 1:
            self._off = True
            return
        choice = choices[0]
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is not dict or choice.get("index", 0) != 0 \
                or choice.get("finish_reason") is not None \
                or choice.get("logprobs") is not None or not choice.keys() <= _CHOICE_KEYS \
                or not delta.keys() <= _PLAIN_DELTA or delta.get("role") not in (None,
                                                                                  "assistant"):
            self._off = True
            return
        content = delta.get("content")
        if content is None:
            return
        if type(content) is not str:
            self._off = True
        elif content:  # an empty first text does not open the part (the handler drops it)
            self._open = True

    def catch_up(self) -> dict[str, Any] | None:
        """The chunk of all the text that skipped the handler since it last had some (the
        last such chunk with their joined text: its id is the one the handler would have
        kept), or None."""
        if not self._pending:
            return None
        body = self._last
        if body is None:
            assert self._template is not None
            body = self._template.body()
        self._last = self._template = None
        body["choices"][0]["delta"]["content"] = "".join(self._pending)
        self._pending = []
        return body
