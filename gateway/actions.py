"""What the per-connection state machine asks its connection to do, and what it asks to read.

The vocabulary between :class:`gateway.session_protocol.SessionProtocol`, which decides and
returns these values, and ``gateway/connection.py``, which executes them (like the events of
python-websockets' ``protocol.py``). Plain frozen values: no I/O, no state.
"""

from __future__ import annotations

from dataclasses import dataclass

from agentia.codes import CloseCode
from gateway import protocol as P


@dataclass(frozen=True, slots=True)
class Write:
    """Queue ``frame`` for the client; ``paced``: wait while the send budget is half used;
    ``droppable``: a ``partial``, dropped when it does not fit the send budget (not a SLOW
    close: :meth:`SessionProtocol.on_dropped`)."""

    frame: bytes
    paced: bool = False
    droppable: bool = False


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection (after what is queued; ``SLOW`` drops the queue and resets)."""

    code: CloseCode
    reason: str


@dataclass(frozen=True, slots=True)
class Submit:
    """Submit a turn; report with :meth:`SessionProtocol.on_submitted` or ``on_failure``."""

    frame: P.Send


@dataclass(frozen=True, slots=True)
class CancelTurn:
    """Cancel a turn; report with :meth:`SessionProtocol.on_cancelled` or ``on_failure``."""

    frame: P.Cancel


@dataclass(frozen=True, slots=True)
class ApproveCall:
    """Record a decision on a pending tool call; report with
    :meth:`SessionProtocol.on_approved` or ``on_failure``."""

    frame: P.Approve


@dataclass(frozen=True, slots=True)
class Replay:
    """Read the log after the cursor: for a ``resume`` (``frame``, answered inline, after any
    fill that runs), or to fill a gap (``frame`` None, in the background). Start it with
    :meth:`SessionProtocol.begin_replay`, then loop: :meth:`~SessionProtocol.replay_request`,
    read, :meth:`~SessionProtocol.on_replay_page`, write, :meth:`~SessionProtocol.page_written`."""

    frame: P.Resume | None = None


@dataclass(frozen=True, slots=True)
class ReadPartial:
    """Read the running turn's text so far; report with :meth:`SessionProtocol.on_partial`
    (None when it could not be read). In a resume's answer it is awaited in order; after a
    chunk out of order it runs in the background."""


Action = Write | Close | Submit | CancelTurn | ApproveCall | Replay | ReadPartial
FILL = Replay()
READ_PARTIAL = ReadPartial()


@dataclass(frozen=True, slots=True)
class ReadLog:
    """One page to read from the session's log: events after ``after``."""

    after: int
    epoch: str | None
    count: int
