"""A model's stream read from a task of its own for the direct path (sessions/direct_run.py),
bounded, and the lean model's tap for text that skips the SDK's handler."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

END = object()
"""After the last event."""
CAUGHT_UP = object()
"""From the lean model's tap: the next event is the text delta of text given already."""


class ModelPump:
    """Reads a model's stream from a task of its own, as the Runner reads it from its run
    loop's task: the stream stays in one task (and one context) whether the direct path or,
    after it gave up, the Runner takes its events. The model's own error is raised by
    :meth:`next` after the events before it.

    It is also the lean model's :class:`sessions.lean_model.TextTap`: text that skipped the
    SDK's handler waits here as ``str`` (runs of it joined), before the events after it.

    **Bounded**: at :data:`MAX_WAITING` events, or :data:`MAX_TEXT` characters of text, not
    yet taken, it stops reading the model's stream until the turn has taken half of them; the
    model's bytes then wait in its connection (sessions/model_http.py stops reading the socket
    past ``HIGH_WATER``), then in the kernel: the model is slowed down, nothing is dropped."""

    def __init__(self) -> None:
        self.got: deque[Any] = deque()
        self.text_waiting = 0
        self.ended = False
        self.failure: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        """The turn's wait for more (:meth:`next`), woken by the first event after it, not
        by each: a model that streams a burst is stepped with one check an event (an
        ``asyncio.Event.set`` call an event was ~0.4 µs, 28 a demo turn; session 20)."""
        self._room = asyncio.Event()
        self._room.set()
        self.task: asyncio.Task[None] | None = None

    def start(self, events: AsyncIterator[Any]) -> None:
        self.task = asyncio.create_task(self._run(events))

    async def _run(self, events: AsyncIterator[Any]) -> None:
        got = self.got
        try:
            async for event in events:
                got.append(event)
                if self.waiter is not None:
                    self._wake()
                if len(got) >= MAX_WAITING or self.text_waiting >= MAX_TEXT:  # full()
                    await self.room()
        except Exception as exc:  # the model's, raised where its events are read
            self.failure = exc
        finally:
            self.ended = True
            self._wake()
            await events.aclose()  # type: ignore[attr-defined]

    def _wake(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # the lean model's TextTap
    def text(self, text: str) -> None:
        got = self.got
        if got and type(got[-1]) is list:
            got[-1].append(text)
        else:
            got.append([text])
        self.text_waiting += len(text)
        self._wake()

    def caught_up(self) -> None:
        self.got.append(CAUGHT_UP)
        self._wake()

    def full(self) -> bool:
        return len(self.got) >= MAX_WAITING or self.text_waiting >= MAX_TEXT

    async def room(self) -> None:
        self._room.clear()
        await self._room.wait()

    async def next(self) -> Any:
        """The next event (text that skipped the handler as one ``str``), or ``END`` after
        the last."""
        while not self.got:
            if self.ended:
                if self.failure is not None:
                    failure, self.failure = self.failure, None
                    raise failure
                return END
            waiter = self.waiter = asyncio.get_running_loop().create_future()
            await waiter
        event = self.got.popleft()
        if type(event) is list:
            event = "".join(event)
            self.text_waiting -= len(event)
        self._made_room()
        return event

    def take_ready(self, kind: type) -> list[Any]:
        """The events of exactly type ``kind`` waiting now at the front, taken without
        waiting (none when the next is anything else; at most what the pump holds, bounded):
        a model that streamed a burst of text deltas while the turn was busy is handed over
        in one step."""
        got, taken = self.got, []
        while got and type(got[0]) is kind:
            taken.append(got.popleft())
        if taken:
            self._made_room()
        return taken

    def _made_room(self) -> None:
        if not self._room.is_set() and len(self.got) <= MAX_WAITING // 2 \
                and self.text_waiting <= MAX_TEXT // 2:
            self._room.set()

    async def stop(self) -> None:
        task = self.task
        if task is None:
            return
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


MAX_WAITING = 256
"""Model events a :class:`ModelPump` holds for its turn, at most (then it stops reading)."""
MAX_TEXT = 64 * 1024
"""Characters of text a :class:`ModelPump` holds for its turn, at most (then likewise)."""
