"""Each server's client protocol, as far as the benchmark needs it, over :class:`WSClient`.

Both adapters count the same things in a :class:`Tally`: connections ready, event frames
received (the fan-out test), keepalive round trips, drops. Events are recognised by a byte
test rather than parsed: the client's cost must not depend on the server measured.

* Agentia (``agentia.v1``): the token in ``Authorization: Bearer``, one session per
  connection (``?session=``); ready on ``welcome``; the client sends ``{"type":"ping"}`` every
  heartbeat and counts ``pong``; session events start with ``{"offset":``, reply chunks
  with ``{"type":"chunk"``.
* Centrifugo (client protocol v2, JSON): ``{"id":1,"connect":{"token":JWT}}``, then
  ``{"id":2,"subscribe":{"channel":...}}``; ready on the subscribe reply. The server pings
  with an empty reply ``{}`` and the client answers with an empty command ``{}`` (only after a
  ping: an unasked pong is a protocol error there). Several replies may share one WebSocket
  message, one JSON object per line; publications arrive as ``{"push":{"channel":..,"pub":..}}``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jwt

from gateway.auth import mint
from loadtest.peer.wsclient import WSClient

TOKEN_TTL_S = 4 * 3600


@dataclass(slots=True)
class Tally:
    ready: int = 0
    events: int = 0
    keepalives: int = 0
    """Agentia: pongs received; Centrifugo: server pings answered."""
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, why: str) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1


def channel_of(idx: int) -> str:
    """Centrifugo channel (and, without the namespace, Agentia session) of connection idx."""
    return f"bench:c{idx}"


def session_of(idx: int) -> str:
    return f"peer-c{idx}"


class AgentiaAdapter:
    name = "agentia"

    def __init__(self, secret: str, tally: Tally, heartbeat_s: float) -> None:
        self.secret = secret
        self.tally = tally
        self.heartbeat_s = heartbeat_s

    def request(self, idx: int) -> tuple[str, list[str]]:
        token = mint(self.secret, f"u{idx}", TOKEN_TTL_S)
        return (f"/v1/ws?session={session_of(idx)}",
                ["Sec-WebSocket-Protocol: agentia.v1", f"Authorization: Bearer {token}"])

    def on_open(self, conn: WSClient) -> None:
        pass  # the server speaks first (welcome)

    def on_message(self, conn: WSClient, payload: bytes) -> None:
        if payload.startswith(b'{"offset"') or payload.startswith(b'{"type":"chunk"'):
            self.tally.events += 1
        elif b'"pong"' in payload[:20]:
            self.tally.keepalives += 1
        elif b'"welcome"' in payload[:20]:
            self.tally.ready += 1
            conn.mark_ready()
        elif b'"error"' in payload[:20]:
            self.tally.error("error frame")

    def keepalive(self, conn: WSClient) -> None:
        """Called by the process every heartbeat: the client pings (the server only answers)."""
        conn.send_text(b'{"type":"ping"}')


class CentrifugoAdapter:
    name = "centrifugo"

    def __init__(self, secret: str, tally: Tally, heartbeat_s: float) -> None:
        self.secret = secret
        self.tally = tally
        self.heartbeat_s = heartbeat_s

    def request(self, idx: int) -> tuple[str, list[str]]:
        return "/connection/websocket", []

    def on_open(self, conn: WSClient) -> None:
        token = jwt.encode({"sub": f"u{conn.idx}", "exp": int(time.time()) + TOKEN_TTL_S},
                           self.secret, algorithm="HS256")
        conn.send_text(b'{"id":1,"connect":{"token":"%s","name":"bench"}}' % token.encode())

    def on_message(self, conn: WSClient, payload: bytes) -> None:
        for line in payload.split(b"\n"):
            if line == b"{}":
                conn.send_text(b"{}")
                self.tally.keepalives += 1
            elif line.startswith(b'{"push"'):
                if b'"pub"' in line:
                    self.tally.events += 1
            elif b'"error"' in line:
                self.tally.error(line[:120].decode(errors="replace"))
                conn.fail("error reply")
            elif line.startswith(b'{"id":1,'):
                conn.send_text(b'{"id":2,"subscribe":{"channel":"%s"}}'
                               % channel_of(conn.idx).encode())
            elif line.startswith(b'{"id":2,'):
                self.tally.ready += 1
                conn.mark_ready()

    def keepalive(self, conn: WSClient) -> None:
        """Nothing: Centrifugo's server pings and the client answers in on_message."""
