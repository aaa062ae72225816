"""Pydantic objects built as their validation builds them, without running it, for values
that are already of their fields' types: the demo model's stream events (sessions/demo.py).

The demo model streams a reply as 27 text delta events and a completed response (a response, its
message, its text part): 31 pydantic objects a turn, each validated (~2 µs a delta, ~18 µs the
completed event on this box; ~10 % of a burst worker's py-spy samples; issue 13, session 19).
The values the demo model gives them are fixed but for the text, the sequence number and the
nested objects, which are already validated: validating them again produces nothing new.
:class:`Shape` learns from one validated example what validation makes of the fixed values
(every field, in order, defaults included; the fields counted as set; the ``__pydantic_extra__``
it gets) and builds each object from that and the varying values (``pydantic``'s own
``model_construct`` is ~15 times slower than validating: it works field by field in Python). The
objects are the same as the validated ones: equal, the same field order, the same set fields, so
the same ``model_dump`` and JSON (tests/unit/test_model_shapes.py compares them with validation,
and the demo's stream with a validated one).

Only for values of the field's exact type: a ``str`` for a ``str`` field, an ``int`` for an
``int``, a list of already validated objects for a list of models (validation keeps such an
object itself, ``revalidate_instances`` being ``never``, in a new list). A value it would
convert (an ``int`` for a ``float``) goes into the example instead.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)
PLAIN = (str, int, float, bool, type(None))
"""The types of a value shared as it is: nothing in it to copy or to validate."""
_new = object.__new__
_set = object.__setattr__


class Shape(Generic[M]):
    """Builds instances of ``example``'s class that differ from ``example`` only in the
    ``varying`` fields (which the example must have set, as every object built has them set).
    Every other field is taken from the example: a plain value (shared), checked here."""

    def __init__(self, example: M, varying: tuple[str, ...]) -> None:
        values = example.__dict__
        fixed = {k: v for k, v in values.items() if k not in varying}
        if missing := set(varying) - set(example.__pydantic_fields_set__):
            raise ValueError(f"{type(example).__name__}: {sorted(missing)} not set")
        if not all(type(v) in PLAIN for v in fixed.values()):
            raise ValueError(f"{type(example).__name__}: a fixed field is not a plain value")
        if example.__pydantic_private__ is not None or example.__pydantic_extra__:
            raise ValueError(f"{type(example).__name__}: private or extra values")
        self.cls: type[M] = type(example)
        self.values = dict(values)
        """Every field in the order validation gives them (the varying ones overwritten)."""
        self.given = frozenset(example.__pydantic_fields_set__)
        self.extra_empty = example.__pydantic_extra__ is not None  # ``{}`` (extra allowed)

    def make(self, **varying: Any) -> M:
        """An instance with the example's fixed values and ``varying`` (each of its field's
        type, a list fresh for this instance)."""
        values = self.values.copy()  # keeps the fields' order
        values.update(varying)
        obj = _new(self.cls)
        _set(obj, "__dict__", values)
        _set(obj, "__pydantic_fields_set__", set(self.given))
        _set(obj, "__pydantic_extra__", {} if self.extra_empty else None)
        _set(obj, "__pydantic_private__", None)
        return obj


def plain_model(value: BaseModel) -> bool:
    """Whether ``value`` holds plain values only (fields and extras, no private values): a
    shallow copy of it is its deep copy."""
    return value.__pydantic_private__ is None and all(
        type(v) in PLAIN for v in (*value.__dict__.values(),
                                   *(value.__pydantic_extra__ or {}).values()))
