"""The direct turn's input (sessions/sdk_history.py) is what the SDK's preparation gives, on
histories of messages (its one pass) and of anything else (the SDK's own functions)."""

from __future__ import annotations

import copy
from typing import Any, cast

import pytest
from agents import RunContextWrapper, Session
from agents.memory.session_settings import SessionSettings
from agents.run_internal.items import deduplicate_input_items_preferring_latest
from agents.run_internal.run_loop import _prepare_turn_input_items
from agents.run_internal.session_persistence import prepare_input_with_session

from sessions import sdk_history as H

USER = {"role": "user", "content": "hello there"}
SAID = {"id": "msg_demo", "type": "message", "role": "assistant", "status": "completed",
        "content": [{"type": "output_text", "text": "You said: hello", "annotations": [],
                     "logprobs": []}]}
NOTE = {"role": "system", "content": "the operator says hi"}
PARTS = {"role": "user", "content": [{"type": "input_text", "text": "look"}]}
CALL = {"type": "function_call", "name": "current_time", "call_id": "call_1", "id": "fc_1",
        "arguments": "{}"}
OUTPUT = {"type": "function_call_output", "call_id": "call_1", "output": "12:00"}
ORPHAN = {"type": "function_call", "name": "calculate", "call_id": "call_2", "id": "fc_2",
          "arguments": "{}"}
TAGGED = {**SAID, "created_by": "runner"}
REASONING = {"type": "reasoning", "id": "rs_1", "summary": []}

PLAIN: list[list[Any]] = [[], [USER], [USER, SAID] * 30, [NOTE, PARTS, USER, SAID, SAID, USER]]
PROGRAM = {**USER, "caller": {"type": "program", "caller_id": "p"}}
OTHER: list[list[Any]] = [[USER, CALL, OUTPUT, SAID], [USER, ORPHAN, USER, SAID],
                          [USER, TAGGED, USER], [REASONING, ORPHAN, USER], [USER, SAID, PROGRAM]]


class Memory:
    """A session whose every read answers fresh copies of ``items`` (as Redis does)."""

    def __init__(self, items: list[Any], limit: int | None = None) -> None:
        self.items, self.reads = items, 0
        self.session_id = "s"
        self.session_settings = SessionSettings(limit=limit) if limit else None

    async def get_items(self, limit: int | None = None) -> list[Any]:
        self.reads += 1
        return copy.deepcopy(self.items[-limit:] if limit else self.items)

    async def add_items(self, items: list[Any]) -> None:
        raise AssertionError("preparing saves nothing")


async def _sdk(text: str, session: Memory) -> tuple[list[Any], list[Any]]:
    prepared, to_save = await prepare_input_with_session(
        text, cast(Session, session), None, None, include_history_in_prepared_input=True,
        preserve_dropped_new_items=True, reasoning_item_id_policy=None,
        wrapper=RunContextWrapper(context=None))
    return deduplicate_input_items_preferring_latest(
        _prepare_turn_input_items(prepared, [], None)), to_save


@pytest.mark.parametrize("history", PLAIN + OTHER)
@pytest.mark.parametrize("limit", [None, 3])
async def test_the_input_is_the_sdks(history: list[Any], limit: int | None) -> None:
    mine = Memory(history, limit)
    got: tuple[list[Any], list[Any]] = await H.prepare(
        "what now", mine, lambda: RunContextWrapper(context=None))
    assert got == await _sdk("what now", Memory(history, limit))
    assert mine.reads == 1  # the fallback uses the read already made
    assert got[0][-1] == {"role": "user", "content": "what now"} == got[1][0]
    assert got[0][-1] is not got[1][0]


def test_only_plain_messages_take_the_one_pass() -> None:
    assert all(H.plain(i) for h in PLAIN for i in h)
    assert not any(all(H.plain(i) for i in h) for h in OTHER)


async def test_the_copies_are_fresh() -> None:
    """Like the SDK's, each item given is a new dict: the caller's history stays as read."""
    read: list[Any] = []

    class Once(Memory):
        async def get_items(self, limit: int | None = None) -> list[Any]:
            read.extend(await super().get_items(limit))
            return read

    given, _ = await H.prepare("x", Once([USER, SAID]), lambda: RunContextWrapper(context=None))
    model_input: list[Any] = given
    assert model_input[:2] == read and all(a is not b for a, b in zip(model_input, read,
                                                                      strict=False))
    model_input[0]["content"] = "changed"
    assert read[0]["content"] == "hello there"


@pytest.mark.parametrize("history", PLAIN + OTHER)
async def test_without_copies_a_plain_history_is_given_as_read(history: list[Any]) -> None:
    """``copies=False`` (a model that only reads, :func:`sessions.sdk_history.reads_only`):
    the same input as the SDK's; a history of plain messages is the very items read, the
    new message a fresh dict; any other history is still the SDK's copies."""
    read: list[Any] = []

    class Once(Memory):
        async def get_items(self, limit: int | None = None) -> list[Any]:
            read.extend(await super().get_items(limit))
            return read

    got = await H.prepare("x", Once(history), lambda: RunContextWrapper(context=None),
                          copies=False)
    assert got == await _sdk("x", Memory(history))
    plain = history in PLAIN
    assert all((a is b) is plain for a, b in zip(got[0], read, strict=False))
    assert got[0] is not read and got[0][-1] is not got[1][0]


def test_only_a_model_that_says_so_reads_only() -> None:
    from sessions.demo import DemoModel

    class Copying(DemoModel):
        reads_input_only = False

    assert H.reads_only(DemoModel(0)) and not H.reads_only(Copying(0))
    assert not H.reads_only(object())
