"""The Python client SDK for the ``agentia.v1`` protocol (docs/protocol.md).

::

    async with AgentiaClient(["ws://edge-a:8765/v1/ws", "ws://edge-b:8765/v1/ws"],
                             token=get_token, session="support-42") as client:
        print(await client.ask("what is 6 * 7"))

        async for ev in client.stream("tell me a story"):   # one turn's events, typed
            if isinstance(ev, Chunk):
                print(ev.text, end="")               # a Partial replaces the text so far

        async for ev in client.stream("book a table for two at seven"):
            if isinstance(ev, ApprovalRequest):     # the turn waits for a person
                await client.approve(ev.call_id, approved=True)

        async for event in client.events():        # every event of the session, once, in order
            if isinstance(event, Reset):
                ...                                 # the view has a gap: rebuild it
            elif event["type"] == "reply":
                print(event["text"])

What the client does for you:

* **Connects and reconnects.** URLs are tried in the order given; after every disconnect the
  next one is used. Reconnects wait a jittered exponential backoff (:class:`Backoff`), honour
  ``Retry-After`` on HTTP 503 for that URL, and stop for good on HTTP 401/403 (and the other
  4xx refusals but 408, 425, 429), on close codes 4500-4999 and the protocol-violation codes
  1002, 1003, 1007, 1008 and 1010, or after ``Backoff.max_attempts`` failed attempts in a
  row (``Backoff.max_first_attempts`` before the first connection: 1 fails at once when
  nothing listens).
  Every other close (1000 not asked for by us, 1001, 1006, 1009, 1011, 1012, 4000-4499, ...)
  reconnects. A token callable is awaited again before every attempt, so a fresh token is
  used after ``4003 token_expired``.
* **Resumes.** It keeps the session id, epoch and the last offset applied; after a reconnect
  it sends ``resume`` and applies what was missed, exactly once and in offset order. A resume
  that cannot be recovered (log trimmed, session re-created), or an unrequested ``resumed``
  with ``recovered: false``, is surfaced as a :class:`Reset` in :meth:`events`.
* **Sends exactly once.** :meth:`send` gives each message an id, waits for its ``ack``,
  retries with the same id after ``rate_limited`` (after ``retry_after_ms``), ``overloaded``,
  ``unavailable`` and ``internal``, and re-sends it with the same id after a reconnect: the
  edge deduplicates, so a turn never runs twice. By default the client also mirrors the
  edge's token bucket (``welcome.limits``), so requests are paced instead of refused.
* **Keeps the connection alive** with a ``ping`` every ``heartbeat_s`` seconds without other
  traffic (the edge's ``limits.heartbeat_s`` unless given), and drops a connection whose edge
  stops answering requests (``request_timeout``) or WebSocket pings (``keepalive_s``).

Requests (``send``, ``cancel``, ``approve`` and the client's own ``resume``) go out one at a
time, in order: each waits for its answer before the next is written. The edge handles a
connection's frames one by one anyway, so this costs one round trip per request, and it keeps
a session's messages in the order they were sent, with or without retries.

Bounded queues, and what happens at the limit:

* ``max_events`` events not yet taken from :meth:`events`: when full, new events are not
  queued, and the client remembers the first one it skipped. It keeps reading the socket
  (acks, replies to :meth:`ask`, heartbeats are never held up) and once the application has
  taken half of the queue it asks the edge again for the skipped events (``resume``): nothing
  is lost while the session log still holds them (about the last 10,000 events; otherwise a
  :class:`Reset` says so). An application that never calls :meth:`events` just leaves the
  queue full.
* ``max_pending`` sends and cancels not yet answered: further calls wait for room (the wait
  counts towards their timeout).
* Events received while a ``resume`` is answered are buffered (at most
  ``max(max_events, 1024)``); any beyond are dropped and fetched again by another resume.
  ``chunk``/``partial`` frames are buffered then too (as many again); any beyond are dropped
  and not fetched again (they are not log events): an :meth:`ask` or :meth:`stream` then
  shows no more streamed text until its turn ends, and the ending event has the whole text.
* The ``websockets`` library queues at most 16 incoming messages, then stops reading the
  socket.

All background work runs in one task per client (started by :meth:`connect`, ended by
:meth:`close`) and, per connection, a task group of reader, request pump and heartbeat.

The package, by role: ``codes`` (the protocol's close and error codes, a copy of the
server's table), ``errors`` (the exception tree), ``values`` (``Ack``, ``Reset``, ``Limits``),
``events`` (a typed class per frame and event, :func:`parse_frame`; the agent's own
events in ``agent_events``, field readers in ``fields``), ``replies`` (the pure
:class:`TurnText`: a turn's text from its ``chunk``/``partial`` frames), ``policy`` (what each
close code makes the client do, :class:`Backoff`, URLs), ``tracker`` (the pure offset
:class:`Tracker`), ``pacing`` (the mirrored token bucket), ``pending`` (requests, checked
from the caller's arguments, and asks in flight), ``streaming`` (what :meth:`stream` and
:meth:`events` yield), ``core`` (state and I/O-free bookkeeping), ``inbound`` (what each
frame from the edge does, no I/O), ``connection`` (the supervisor and per-connection I/O)
and ``client`` (the public :class:`AgentiaClient`).
"""

from __future__ import annotations

from agentia_client.agent_events import (
    AgentState,
    ApprovalRequest,
    ApprovalResult,
    Handoff,
    ToolCall,
    ToolResult,
)
from agentia_client.backend_events import PostedMessage, Presence, Takeover
from agentia_client.client import AgentiaClient
from agentia_client.codes import PROTOCOL, RETRYABLE, CloseCode, ErrorCode, __version__
from agentia_client.errors import (
    AuthenticationError,
    ClientClosed,
    ClientError,
    ConnectError,
    ConnectionLost,
    ReconnectFailed,
    RequestError,
    SendTimeout,
    ServerClosed,
    SessionReset,
    TurnCancelled,
    TurnError,
    TurnFailed,
)
from agentia_client.events import (
    AgentEvent,
    CallState,
    Cancelled,
    Cancelling,
    Chunk,
    ControlFrame,
    ErrorFrame,
    LogEvent,
    Partial,
    Pong,
    Reply,
    Resumed,
    ServerFrame,
    StreamFrame,
    Transcript,
    TurnEnd,
    TurnEvent,
    TurnFailure,
    TurnStart,
    UnknownEvent,
    UserMessage,
    Welcome,
    parse_event,
    parse_frame,
    parse_stream,
)
from agentia_client.pacing import _Bucket as _Bucket
from agentia_client.pending import _Waiter as _Waiter
from agentia_client.policy import STABLE_AFTER_S as STABLE_AFTER_S
from agentia_client.policy import WS_PATH as WS_PATH
from agentia_client.policy import Backoff, close_action
from agentia_client.policy import session_url as session_url
from agentia_client.replies import TurnText
from agentia_client.tracker import Tracker
from agentia_client.values import AGENT_NAME_RE as AGENT_NAME_RE
from agentia_client.values import CONTROL_FRAMES as CONTROL_FRAMES
from agentia_client.values import MAX_CLIENT_ID as MAX_CLIENT_ID
from agentia_client.values import SESSION_ID_RE as SESSION_ID_RE
from agentia_client.values import STREAM_FRAMES as STREAM_FRAMES
from agentia_client.values import Ack, Event, Limits, Reset
from agentia_client.values import TokenSource as TokenSource
from agentia_client.values import Trace as Trace

__all__ = [
    "PROTOCOL",
    "RETRYABLE",
    "Ack",
    "AgentEvent",
    "AgentState",
    "AgentiaClient",
    "ApprovalRequest",
    "ApprovalResult",
    "AuthenticationError",
    "Backoff",
    "CallState",
    "Cancelled",
    "Cancelling",
    "Chunk",
    "ClientClosed",
    "ClientError",
    "CloseCode",
    "ConnectError",
    "ConnectionLost",
    "ControlFrame",
    "ErrorCode",
    "ErrorFrame",
    "Event",
    "Handoff",
    "Limits",
    "LogEvent",
    "Partial",
    "Pong",
    "PostedMessage",
    "Presence",
    "ReconnectFailed",
    "Reply",
    "RequestError",
    "Reset",
    "Resumed",
    "SendTimeout",
    "ServerClosed",
    "ServerFrame",
    "SessionReset",
    "StreamFrame",
    "Takeover",
    "ToolCall",
    "ToolResult",
    "Tracker",
    "Transcript",
    "TurnCancelled",
    "TurnEnd",
    "TurnError",
    "TurnEvent",
    "TurnFailed",
    "TurnFailure",
    "TurnStart",
    "TurnText",
    "UnknownEvent",
    "UserMessage",
    "Welcome",
    "__version__",
    "close_action",
    "parse_event",
    "parse_frame",
    "parse_stream",
]
