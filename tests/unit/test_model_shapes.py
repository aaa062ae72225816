"""sessions/model_shapes.py and the demo model's stream built with it: the objects are the ones
pydantic's validation builds (equal, same field order, same fields set, same JSON), so what the
SDK, the memory and clients get from the demo model is unchanged."""

from __future__ import annotations

from typing import Any

import pytest
from agents import ModelSettings
from agents.models.interface import ModelTracing
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseTextDeltaEvent,
)
from pydantic import BaseModel

from sessions.demo import DemoModel
from sessions.model_shapes import Shape


def _validated_stream(text: str) -> list[Any]:
    """The demo model's text reply as it was built before session 19: every object validated."""
    words = text.split(" ")
    events: list[Any] = [ResponseTextDeltaEvent(
        type="response.output_text.delta", item_id="msg_demo", output_index=0, content_index=0,
        delta=w if n == 0 else " " + w, logprobs=[], sequence_number=n)
        for n, w in enumerate(words)]
    message = ResponseOutputMessage(
        id="msg_demo", type="message", role="assistant", status="completed",
        content=[ResponseOutputText(text=text, type="output_text", annotations=[], logprobs=[])])
    response = Response(id="resp_demo", created_at=0, model="agentia-demo", object="response",
                        output=[message], tool_choice="auto", tools=[], top_p=None,
                        parallel_tool_calls=False, status="completed")
    events.append(ResponseCompletedEvent(type="response.completed", response=response,
                                         sequence_number=10_000))
    return events


def same(made: BaseModel, validated: BaseModel) -> None:
    """``made`` is ``validated`` in every way the SDK, the memory or a client can tell."""
    assert type(made) is type(validated)
    assert made == validated
    assert list(made.__dict__) == list(validated.__dict__)  # the field order: the JSON's
    assert made.__pydantic_fields_set__ == validated.__pydantic_fields_set__
    assert made.__pydantic_extra__ == validated.__pydantic_extra__
    assert made.__pydantic_private__ == validated.__pydantic_private__
    assert made.model_dump_json() == validated.model_dump_json()
    assert made.model_dump(exclude_unset=True) == validated.model_dump(exclude_unset=True)
    assert made.model_dump_json(exclude_unset=True) == validated.model_dump_json(
        exclude_unset=True)
    for name, value in made.__dict__.items():  # nested objects and lists alike
        if isinstance(value, BaseModel):
            same(value, getattr(validated, name))
        elif isinstance(value, list):
            assert len(value) == len(getattr(validated, name))
            for a, b in zip(value, getattr(validated, name), strict=True):
                if isinstance(a, BaseModel):
                    same(a, b)


async def _demo_stream(text: str) -> list[Any]:
    model = DemoModel(word_delay=0)
    return [e async for e in model.stream_response(
        None, [{"role": "user", "content": text}], ModelSettings(), [], None, [],
        ModelTracing.DISABLED, previous_response_id=None, conversation_id=None, prompt=None)]


@pytest.mark.parametrize("said", ["hello", "tell me a joke about redis streams",
                                  "ünïcödé ☃ and \"quotes\" \\ back", "two  spaces", ""])
async def test_the_demo_stream_is_the_validated_one(said: str) -> None:
    events = await _demo_stream(said)
    reply = events[-1].response.output[0].content[0].text
    expected = _validated_stream(reply)
    assert len(events) == len(expected) == len(reply.split(" ")) + 1
    for made, validated in zip(events, expected, strict=True):
        same(made, validated)


async def test_each_object_has_its_own_lists() -> None:
    a, b = await _demo_stream("one"), await _demo_stream("two")
    assert a[0].logprobs is not a[1].logprobs
    assert a[-1].response.tools is not b[-1].response.tools
    assert a[-1].response.output is not b[-1].response.output
    text_a, text_b = a[-1].response.output[0].content[0], b[-1].response.output[0].content[0]
    assert text_a.annotations is not text_b.annotations
    a[0].__pydantic_fields_set__.add("x")  # nor one set of set fields
    assert "x" not in a[1].__pydantic_fields_set__


def test_a_shape_made_object_is_the_validated_one() -> None:
    shape = Shape(ResponseTextDeltaEvent(type="response.output_text.delta", item_id="i",
                                         output_index=0, content_index=0, delta="",
                                         logprobs=[], sequence_number=0),
                  ("delta", "logprobs", "sequence_number"))
    for n, delta in enumerate(["a", " b", "", "☃"]):
        same(shape.make(delta=delta, logprobs=[], sequence_number=n),
             ResponseTextDeltaEvent(type="response.output_text.delta", item_id="i",
                                    output_index=0, content_index=0, delta=delta, logprobs=[],
                                    sequence_number=n))


def test_a_shape_takes_only_plain_fixed_values_and_set_varying_ones() -> None:
    message = ResponseOutputMessage(id="m", type="message", role="assistant",
                                    status="completed", content=[])
    with pytest.raises(ValueError, match="not a plain value"):
        Shape(message, ())  # content, a list, would be shared by every object made
    with pytest.raises(ValueError, match="not set"):
        Shape(message, ("content", "phase"))  # phase: a default, not set by validation
