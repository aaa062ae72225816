"""Faster equivalents of SDK helpers that a worker calls on every turn or every token.

Profiled on the demo agent (docs/benchmarks.md, "Worker CPU per turn"): the first three cost
about a third of the SDK's CPU per turn, the model settings' defaults (worker-fast) ~5 % more,
and each does work whose result cannot change between turns. Each replacement returns exactly
what the original returns (tests/unit/test_sdk_speedups.py compares them) and falls back to
the original outside its fast path.
They are installed once per worker process by :func:`install`, and only on the SDK versions
they were written against: on any other version the SDK is left as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import logging
from collections.abc import AsyncGenerator, Callable
from importlib.metadata import version
from typing import Any

import orjson
import pydantic
from openai import AsyncOpenAI
from openai._streaming import ServerSentEvent, SSEDecoder
from openai.types.chat import ChatCompletionChunk

from sessions import sdk_tasks
from sessions.model_shapes import PLAIN as _PLAIN
from sessions.model_shapes import plain_model

# the stream's lines, moved to their own module (callers use these names from here too)
from sessions.sse_lines import MAX_LINE as MAX_LINE
from sessions.sse_lines import LineSplitter as LineSplitter
from sessions.sse_lines import LineTooLong as LineTooLong

log = logging.getLogger("agentia.worker")
SDK_VERSIONS = ("0.24.",)
"""openai-agents versions whose internals these replacements were checked against."""
_installed = False
ORIGINALS: dict[str, Callable[..., Any]] = {}
"""The SDK's own functions that :func:`install` replaced, by name (tests compare them)."""


def install() -> bool:
    """Install the replacements (idempotent); False when the SDK version is not known."""
    global _installed
    if _installed:
        return True
    sdk = version("openai-agents")
    if not sdk.startswith(SDK_VERSIONS):
        log.info("openai-agents %s: SDK speedups not installed (checked: %s)", sdk,
                 ", ".join(SDK_VERSIONS))
        return False
    _install_dump_compatible()
    _install_identity_map()
    _install_wrapper_check()
    _install_model_settings()
    ORIGINALS["gather_with_cancel"] = sdk_tasks.install()  # no tasks for no-op hooks
    ORIGINALS["tool_plan"] = sdk_tasks.install_tool_plan()  # nor for no tool calls
    _installed = True
    return True


def _install_dump_compatible() -> None:
    """``_to_dump_compatible`` copies every input item (the whole conversation, several times
    a turn) through ABC ``isinstance`` checks per value: 15 % of a turn with 100 items of
    memory. Plain JSON values take a direct path; anything else goes to the original."""
    from agents.util import _json

    original: Callable[[Any], Any] = _json._to_dump_compatible_internal
    ORIGINALS["dump_compatible"] = original

    def fast(obj: Any) -> Any:
        kind = type(obj)
        if kind in _PLAIN:
            return obj
        if kind is dict:
            return {k: fast(v) for k, v in obj.items()}
        if kind is list or kind is tuple:
            return [fast(x) for x in obj]
        return original(obj)

    _json._to_dump_compatible_internal = fast  # the original recurses through this global


def _install_identity_map() -> None:
    """The SDK names every agent reachable from the starting one for its resumable run
    state, twice a run, by sorting each group of same-named agents on a JSON signature of
    the agent's whole configuration (tools, instructions, settings): 0.5 ms a run for the
    demo agent. With no two agents of one name the order cannot matter and each name is its
    own identity; duplicates still go through the original."""
    from agents import _run_state_agent_identity as ident
    from agents import run_state
    from agents.run_internal import tool_use_tracker

    original: Callable[[Any], dict[str, Any]] = ident._build_agent_identity_map
    ORIGINALS["identity_map"] = original

    def fast(initial_agent: Any) -> dict[str, Any]:
        agents = list(ident._iter_agent_graph(initial_agent))
        by_name = {a.name: a for a in agents}
        if len(by_name) == len(agents):
            return by_name
        return original(initial_agent)

    for module in (ident, run_state, tool_use_tracker):
        module._build_agent_identity_map = fast  # type: ignore[attr-defined]


def _install_wrapper_check() -> None:
    """Whether a session method takes ``wrapper`` is decided by ``inspect.signature`` on
    each of the session's four methods, several times a turn. A function's signature does
    not change: it is remembered per function (a bounded cache)."""
    from agents.memory import session

    original: Callable[[Any], bool] = session._session_method_accepts_wrapper
    ORIGINALS["accepts_wrapper"] = original

    @functools.lru_cache(maxsize=256)
    def by_function(func: Any) -> bool:
        return original(func)

    def fast(method: Any) -> bool:
        func = getattr(method, "__func__", None)
        if func is None:  # not a bound method: as the SDK does
            return original(method)
        return by_function(func)

    session._session_method_accepts_wrapper = fast


def _install_model_settings() -> None:
    """``get_model_settings``: the Runner resolves a run's model settings by comparing the
    agent's with the defaults for its model, and builds those defaults each time (a deep copy
    of the GPT-5 ones, 120 us, twice a run when the agent has the defaults). They depend only
    on the model's name and ``OPENAI_DEFAULT_MODEL``: built once per (name, variable); a run is
    handed a copy of them as the SDK hands it one (its own object, and its own copy of every
    field that is not a plain value), the compared ones are never handed out."""
    import dataclasses
    import os

    from agents.model_settings import ModelSettings
    from agents.models import default_models
    from agents.models.interface import Model
    from agents.run_internal import run_loop
    from agents.run_internal import turn_preparation as tp

    ORIGINALS["model_settings"] = tp.get_model_settings
    env = default_models.OPENAI_DEFAULT_MODEL_ENV_VARIABLE_NAME

    @functools.lru_cache(maxsize=64)
    def defaults(model: str | None, _env: str | None) -> tuple[Any, tuple[Any, ...]]:
        settings = default_models.get_default_model_settings(model)
        # a pydantic object of plain values only (the GPT-5 defaults' ``Reasoning``): a
        # shallow copy is its deep copy, 1.3 instead of 4.7 us (issue 13, session 19)
        return settings, tuple(
            (f.name, copy.copy if isinstance(v, pydantic.BaseModel) and plain_model(v)
             else copy.deepcopy) for f in dataclasses.fields(settings)
            if type(v := getattr(settings, f.name)) not in _PLAIN)

    def fresh(entry: tuple[Any, tuple[Any, ...]]) -> Any:
        settings, nested = entry
        copied = copy.copy(settings)
        for name, copier in nested:
            setattr(copied, name, copier(getattr(settings, name)))
        return copied

    def implicit(model: Any) -> tuple[Any, tuple[Any, ...]] | None:
        if model is None:
            return defaults(None, os.environ.get(env))
        return defaults(model, None) if isinstance(model, str) else None

    def fast(agent: Any, run_config: Any) -> Any:
        model_settings = agent.model_settings
        entry = implicit(agent.model)
        if model_settings == (ModelSettings() if entry is None else entry[0]):
            if isinstance(run_config.model, str):
                model_settings = fresh(defaults(run_config.model, None))
            elif isinstance(run_config.model, Model) or entry is None:
                model_settings = ModelSettings()
            else:
                model_settings = fresh(entry)
        return model_settings.resolve(run_config.model_settings)

    for module in (tp, run_loop):
        module.get_model_settings = fast  # type: ignore[attr-defined]


class ChunkClient(AsyncOpenAI):
    """The OpenAI client with fast paths for streamed Chat Completions chunks (see also
    :class:`MergingSSEDecoder`).

    The client builds every response object with its lenient ``construct`` (no validation,
    field by field in Python): 65 us a chunk, a third of a streaming worker's CPU, paid for
    every token. A chunk that matches its schema is validated by pydantic's compiled code
    instead (5 us, the same object); one that does not (a server that leaves fields out)
    still goes the lenient way.

    ``read_every``: the least time (seconds) between two reads of a stream while it streams
    text (see :class:`MergingSSEDecoder`); 0 reads as data comes."""

    read_every: float = 0.0

    def __init__(self, *args: Any, read_every: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_every = read_every

    def _make_sse_decoder(self) -> SSEDecoder:
        return MergingSSEDecoder(self.read_every)

    def _process_response_data(self, *, data: object, cast_to: type[Any],
                                response: Any) -> Any:
        if cast_to is ChatCompletionChunk and isinstance(data, dict):
            try:
                return ChatCompletionChunk.model_validate(data)
            except pydantic.ValidationError:
                pass
        return super()._process_response_data(data=data, cast_to=cast_to, response=response)


class MergingSSEDecoder(SSEDecoder):
    """Server-sent events as the client's decoder gives them, except that the text-only
    chunks that arrived in one read are merged into one chunk of their joined text.

    Every chunk costs the client, the SDK and the worker ~70-120 us whatever its size. The
    HTTP client gives a chunked response's HTTP chunks one by one (one per token, whatever a
    socket read held), so merging within a "read" merges only what one HTTP chunk carried;
    ``read_every`` (below) is what merges a stream's tokens. Only chunks whose single choice
    carries text and nothing else (no role, tool call, finish reason, logprobs or usage) are
    merged, and only with their neighbours in the same read: order and content are unchanged.

    With ``read_every`` (seconds), the bytes are taken off the HTTP client by a task of their
    own and decoded in batches: after a batch that ends with text, the next is taken
    ``read_every`` later, so the tokens that came meanwhile are one merged chunk for the
    client's chunk parsing, the SDK and the worker (the HTTP client gives each of the
    server's chunks on its own, one per token, whatever one socket read held). Text reaches
    the client in ``AGENTIA_COALESCE_MS`` ticks anyway: a batch every tick delays a piece by
    one tick at most and divides the worker's CPU per token above the HTTP client by the
    tokens a batch gathers (2 at 50 tokens/s and 40 ms). The first text, tool calls and a
    reply's end are decoded as they come."""

    def __init__(self, read_every: float = 0.0) -> None:
        super().__init__()
        self.read_every = read_every

    async def aiter_bytes(self, iterator: Any) -> Any:
        if self.read_every:  # closed with this generator: its reader task ends with it
            async with contextlib.aclosing(self._batched(iterator)) as batches:
                async for sse in batches:
                    yield sse
            return
        lines = LineSplitter()
        try:
            async for chunk in iterator:
                events = list(self._decode_lines(iter(lines.feed(chunk))))
                for sse in merge_text_events(events) if len(events) > 1 else events:
                    yield sse
            for sse in self._decode_lines(iter(lines.finish())):
                yield sse
        finally:
            self._reset()

    async def _batched(self, iterator: Any) -> Any:
        lines, texting = LineSplitter(), False
        try:
            async with contextlib.aclosing(
                    paced_reads(iterator, self.read_every, lambda: texting)) as reads:
                async for data in reads:
                    merged, texting = _merge(list(self._decode_lines(iter(lines.feed(data)))))
                    for sse in merged:
                        yield sse
            for sse in self._decode_lines(iter(lines.finish())):
                yield sse
        finally:
            self._reset()


async def paced_reads(iterator: Any, read_every: float,
                      texting: Callable[[], bool]) -> AsyncGenerator[bytes, None]:
    """The bytes of a model's stream read by a task of their own (:class:`_Pump`) and given
    in batches: after a batch, when ``texting()`` (the consumer's view: the batch ended with
    text) the next is taken ``read_every`` later, so the tokens that came meanwhile arrive
    together. The stream's own error is raised here after what came before it."""
    pump = _Pump(iterator)
    try:
        while True:
            data = await pump.take()
            if data:
                yield data
            if pump.ended and not pump.got:
                break
            if texting() and not pump.ended:
                await asyncio.sleep(read_every)
        pump.raise_failure()
    finally:
        await pump.stop()


class _Pump:
    """Reads an async byte iterator into a list from a task of its own (one per stream:
    bounded by the streams a worker runs)."""

    def __init__(self, iterator: Any) -> None:
        self.got: list[bytes] = []
        self.ended = False
        self.failure: BaseException | None = None
        self.more = asyncio.Event()
        self.task = asyncio.create_task(self._run(iterator))

    async def _run(self, iterator: Any) -> None:
        try:
            async for chunk in iterator:
                self.got.append(chunk)
                self.more.set()
        except Exception as exc:  # the stream's own error, raised where it is read
            self.failure = exc
        except asyncio.CancelledError:  # not a clean end of the stream for the reader
            self.failure = ConnectionError("the model stream's reader was cancelled")
            raise
        finally:
            self.ended = True
            self.more.set()

    async def take(self) -> bytes:
        """What came since the last take (waiting for something, or the end)."""
        await self.more.wait()
        self.more.clear()
        data, self.got = b"".join(self.got), []
        return data

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    async def stop(self) -> None:
        if not self.task.done():
            self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def merge_text_events(events: list[ServerSentEvent]) -> list[ServerSentEvent]:
    """Runs of text-only chunk events, each made one event (see :class:`MergingSSEDecoder`)."""
    return _merge(events)[0]


def _merge(events: list[ServerSentEvent]) -> tuple[list[ServerSentEvent], bool]:
    """:func:`merge_text_events`, and whether the last event is a text-only chunk."""
    out: list[ServerSentEvent] = []
    run: list[tuple[ServerSentEvent, dict[str, Any]]] = []
    for sse in events:
        body = _text_only(sse)
        if body is None:
            out.extend(_merged(run))
            run = []
            out.append(sse)
        else:
            run.append((sse, body))
    out.extend(_merged(run))
    return out, bool(run)


def _text_only(sse: ServerSentEvent) -> dict[str, Any] | None:
    if sse.event is not None or not sse.data.startswith("{"):
        return None
    try:
        body: dict[str, Any] = orjson.loads(sse.data)
    except orjson.JSONDecodeError:
        return None
    choices = body.get("choices") if isinstance(body, dict) else None
    if not isinstance(choices, list) or len(choices) != 1 or body.get("usage") is not None:
        return None
    choice = choices[0]
    if not isinstance(choice, dict) or choice.get("finish_reason") is not None \
            or choice.get("logprobs") is not None or set(choice) - {"index", "delta",
                                                                   "finish_reason",
                                                                   "logprobs"}:
        return None
    delta = choice.get("delta")
    if not isinstance(delta, dict) or set(delta) != {"content"} \
            or not isinstance(delta["content"], str):
        return None
    return body


def _merged(run: list[tuple[ServerSentEvent, dict[str, Any]]]) -> list[ServerSentEvent]:
    if len(run) < 2:
        return [sse for sse, _ in run]
    body = run[0][1]
    body["choices"][0]["delta"]["content"] = "".join(
        b["choices"][0]["delta"]["content"] for _, b in run)
    last = run[-1][0]
    return [ServerSentEvent(event=None, data=orjson.dumps(body).decode(), id=last.id,
                            retry=last.retry)]
