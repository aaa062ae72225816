"""What the edge sends, handled without I/O: the ``welcome`` that starts a connection, every
frame after it, and the end of a connection.

:class:`_Inbound` is the layer between :class:`_ClientCore` (agentia_client/core.py) and
:class:`_ConnectionLoop` (agentia_client/connection.py), which reads the socket and calls it
with each frame decoded: log events and stream frames go to the :class:`Tracker`, answers to
the request in flight, ``resumed`` to the resume rule (docs/protocol.md, section 6).
"""

from __future__ import annotations

import logging
from typing import Any

from agentia_client.core import _ClientCore, _Conn
from agentia_client.errors import ConnectionLost
from agentia_client.pending import _fail
from agentia_client.values import CONTROL_FRAMES, STREAM_FRAMES, _int

log = logging.getLogger("agentia_client")


class _Inbound(_ClientCore):
    """The handling of the edge's frames and of a connection's start and end (no I/O)."""

    def _on_welcome(self, conn: _Conn, welcome: dict[str, Any]) -> None:
        """A connection started: where the session is, and whether to resume."""
        t = self._tracker
        sid, epoch, offset = welcome.get("session"), welcome.get("epoch"), welcome.get("offset")
        if self._session is None and isinstance(sid, str):
            self._session = sid
        agent = welcome.get("agent")
        self._welcome_agent = agent if isinstance(agent, str) else None
        epoch = epoch if isinstance(epoch, str) else ""
        offset = offset if isinstance(offset, int) else 0
        self.stats["connections"] += 1
        self._generation += 1
        if t.started:
            self.stats["reconnects"] += 1
            t.need_resume = not t.in_sync_with(epoch, offset)
        elif self._start_after is not None:
            t.start_at(self._start_after, self._start_epoch)
        else:
            t.start_live(epoch, offset)
        self._pacer.reset(conn.limits)
        self._conn = conn
        self._connected.set()
        self._progress.set()
        self._wake.set()
        log.info("connected to %s (node %s), session %s, epoch %s, offset %s", conn.url,
                 conn.node, self._session, epoch, offset)

    def _on_disconnect(self, conn: _Conn) -> None:
        """A connection ended: a cancel or approve in flight fails (it is not re-sent)."""
        self._conn = None
        self._connected.clear()
        self._tracker.end_connection()
        req = conn.outstanding
        if req is not None and req.kind in ("cancel", "approve") and req.future is not None:
            _fail(req.future, ConnectionLost(
                f"the connection dropped with the {req.kind} in flight"))
        if conn.answer is not None and not conn.answer.done():
            conn.answer.cancel()

    def _on_frame(self, conn: _Conn, frame: dict[str, Any]) -> None:
        """One frame after the ``welcome``: to the tracker, or the answer to the request."""
        kind = frame.get("type")
        req = conn.outstanding
        if kind in STREAM_FRAMES:
            if isinstance(frame.get("turn"), int):
                self.stats["stream_frames"] += 1
                self._tracker.on_stream(frame)
            return
        if kind not in CONTROL_FRAMES:
            if isinstance(frame.get("offset"), int):
                self.stats["events"] += 1
                self._tracker.on_event(frame)
            elif kind == "transcript":  # interim: the caller's speech so far, off the log
                self.stats["captions"] += 1
                self._tracker.on_caption(frame)
            return  # an unknown frame type: ignored, as the protocol asks
        if kind == "pong":
            return
        if kind == "resumed":
            self._on_resumed(conn, frame)
            return
        if req is not None and req.answered_by(frame):
            self._answer(conn, frame)
        else:
            self.stats[f"unexpected_{kind}"] += 1
            log.warning("unexpected %s frame: %.300r", kind, frame)

    def _on_resumed(self, conn: _Conn, frame: dict[str, Any]) -> None:
        """The answer to our ``resume``, or an unrequested one reporting a lost session."""
        req = conn.outstanding
        if req is not None and req.kind == "resume" and self._tracker.buffering:
            reset = self._tracker.on_resumed(frame.get("recovered") is True,
                                             _int(frame.get("offset")),
                                             str(frame.get("epoch", "")))
            self.stats["resets"] += reset is not None
            self._answer(conn, frame)
        elif frame.get("recovered") is False:
            self.stats["resets"] += 1
            self._tracker.on_unrequested_reset(_int(frame.get("offset")),
                                               str(frame.get("epoch", "")))

    def _answer(self, conn: _Conn, frame: dict[str, Any]) -> None:
        if conn.answer is not None and not conn.answer.done():
            conn.answer.set_result(frame)
