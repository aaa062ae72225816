"""The model's input of a direct turn (sessions/direct_run.py) from a history of plain messages,
in one pass instead of the SDK's eight.

The Runner builds a turn's input with ``prepare_input_with_session`` and then
``_prepare_turn_input_items`` and ``deduplicate_input_items_preferring_latest``: together they
copy every item of the conversation eight times and walk it five more (orphan tool calls,
duplicate ids), ~7 µs per item: 0.38 ms a turn at 50 items of memory, 1.7 ms at the 200 a
session keeps (``MEMORY_MAXLEN``), more than the rest of a demo turn. When every item is a
plain message (a dict with a ``role``, of type ``message`` or none, without the SDK's session
metadata or a program ``caller``) none of those passes changes anything but the copies: no
item has a dedupe key (a ``role`` has none), no tool call can be an orphan, nothing is
stripped. :func:`prepare` then gives what they give: a fresh top-level copy of each item, in
order. Anything else goes through the SDK's own functions on the items already read
(tests/unit/test_sdk_history.py compares both on message and tool histories).

The turn's two saves of plain messages likewise (:func:`input_saved`, :func:`reply_saved`):
the items the SDK's ``save_result_to_session`` would hand the direct turn's session, made
without its fingerprints and passes (tests/unit/test_direct_saves.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from agents import RunContextWrapper, Session
from agents.items import ItemHelpers, TResponseInputItem
from agents.run_internal.items import (
    TOOL_CALL_SESSION_DESCRIPTION_KEY,
    TOOL_CALL_SESSION_TITLE_KEY,
    deduplicate_input_items_preferring_latest,
)
from agents.run_internal.run_loop import _prepare_turn_input_items
from agents.run_internal.session_persistence import prepare_input_with_session
from pydantic import BaseModel

from sessions.memory_cache import KnownPlain

_NOT_PLAIN = frozenset({TOOL_CALL_SESSION_DESCRIPTION_KEY, TOOL_CALL_SESSION_TITLE_KEY,
                        "created_by", "caller"})
"""Keys the SDK strips from an item, or reads to drop it (a program's orphan call)."""


def plain(item: Any) -> bool:
    """A message no pass of the SDK's input preparation changes (but for copying it)."""
    return (type(item) is dict and isinstance(item.get("role"), str)
            and item.get("type", "message") == "message" and _NOT_PLAIN.isdisjoint(item))


async def prepare(text: str, session: Any, ctx: Callable[[], RunContextWrapper[Any]], *,
                  copies: bool = True
                  ) -> tuple[list[TResponseInputItem], list[TResponseInputItem]]:
    """The model's input (history, then ``text`` as the user's message) and the items to save
    (the user's message), as the Runner's preparation gives them. ``session`` is the SDK
    ``Session`` of the turn (not the OpenAI Conversations one: the direct path's).
    ``ctx`` gives the run's context wrapper (made when first asked for: the one pass needs
    none). ``copies=False`` (a model that only reads its input, :func:`reads_only`): a history of
    plain messages is given as the items read, not copies of them."""
    settings = getattr(session, "session_settings", None)
    limit = getattr(settings, "limit", None)
    history = await (session.get_items(limit=limit) if limit is not None
                     else session.get_items())
    new = ItemHelpers.input_to_new_input_list(text)
    if (type(history) is KnownPlain or all(plain(i) for i in history)) \
            and all(plain(i) for i in new):
        # top-level copies, as the Runner's: a model may change them (the Responses model
        # deletes an item's ``id`` or ``provider_data`` in place), and the memory's items are
        # the worker's cache (sessions/memory_cache.py). ``copy``: each is a dict (``plain``)
        # A model that only reads them (:func:`reads_only`) gets the items themselves: at 1,000
        # turns/s a session's memory is full (200 items) and the copies were 6-9 % of a
        # worker's samples (issue 13, session 18)
        model_input: list[Any] = list(map(dict.copy, history)) if copies else list(history)
        model_input += [dict(i) for i in new]
        return model_input, [cast(TResponseInputItem, dict(i)) for i in new]
    prepared, to_save = await prepare_input_with_session(
        text, cast(Session, _Read(history, settings)), None, None,
        include_history_in_prepared_input=True, preserve_dropped_new_items=True,
        reasoning_item_id_policy=None, wrapper=ctx())
    return deduplicate_input_items_preferring_latest(
        _prepare_turn_input_items(prepared, [], None)), to_save


def reads_only(model: Any) -> bool:
    """A model that declares (``reads_input_only = True`` on its class) that it never changes
    the items of its input in place: the demo model. Any other model gets copies."""
    return getattr(type(model), "reads_input_only", False) is True


def input_saved(to_save: list[Any]) -> list[TResponseInputItem] | None:
    """The items the SDK's ``save_result_to_session`` gives the direct turn's session
    (:class:`sessions.direct_run.TurnSession`) to save for the user's input ``to_save`` (from
    :func:`prepare`), when each is a plain message whose content is a ``str``: a copy of each
    (the input's formatting, normalising and de-duplication change nothing else on them: no
    item with a ``role`` has a de-duplication key, and :func:`plain` excludes the keys it
    strips). None: anything else, for the SDK's own function."""
    if all(plain(i) and type(i.get("content")) is str for i in to_save):
        return [cast(TResponseInputItem, dict(i)) for i in to_save]
    return None


def reply_saved(output: list[Any]) -> list[TResponseInputItem] | None:
    """Likewise for the reply's ``output`` items (the messages of a plain text reply,
    ``direct_run._plain_reply``), saved as the SDK's ``MessageOutputItem`` makes each an input
    item: its ``model_dump(exclude_unset=True)`` without ``created_by``, and without
    ``status`` when that is None. None: an item that is not a message object."""
    saved: list[TResponseInputItem] = []
    for item in output:
        if not isinstance(item, BaseModel) or getattr(item, "type", None) != "message":
            return None
        payload = item.model_dump(exclude_unset=True)
        payload.pop("created_by", None)
        if payload.get("status") is None:
            payload.pop("status", None)
        saved.append(cast(TResponseInputItem, payload))
    return saved


class _Read:
    """The turn's session as the SDK's preparation reads it: the items already read."""

    def __init__(self, items: list[TResponseInputItem], settings: Any) -> None:
        self.items, self.session_settings = items, settings

    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        return self.items
