"""What a connection needs from the edge that holds it: a small seam, so that
``gateway/connection.py`` does not import ``gateway/node.py`` (which builds connections)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from sessions.bus import Replay, Submitted
from sessions.roles import Partial

if TYPE_CHECKING:
    from gateway.traced import TracedTurns


class SessionCalls(Protocol):
    """The bus calls a connection makes for its client's frames."""

    async def submit(self, sid: str, client_id: str, text: str, *, user: str) -> Submitted: ...

    async def cancel(self, sid: str, turn: int | None) -> int: ...

    async def approve(self, sid: str, call_id: str, approved: bool, *, by: str,
                      message: str | None = None) -> int: ...

    async def replay(self, sid: str, after: int, epoch: str | None,
                     limit: int = 500) -> Replay: ...

    async def partial(self, sid: str) -> Partial | None: ...


class Host(Protocol):
    """The edge node, as its connections see it."""

    @property
    def metrics(self) -> Counter[str]: ...

    @property
    def bus(self) -> SessionCalls: ...

    @property
    def traced(self) -> TracedTurns | None:
        """The turns being traced (None: tracing is off, agentia/tracing.py)."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run a background task the node tracks (and cancels at shutdown)."""

    async def post_operator(self, sid: str, text: str, by: str, client_id: str
                            ) -> tuple[int, bool]:
        """An operator connection's ``send``: a ``message`` event of role ``operator``, once
        per ``client_id`` of that operator ((offset, duplicate); SessionLost when the session
        is gone)."""

    async def check_overload(self, sid: str, ref: str, agent: str = "") -> None:
        """Raise OVERLOADED while the session's shard (of ``agent``) is too far behind."""
