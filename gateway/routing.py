"""The public port's HTTP routing, shared by every transport: pure, no I/O.

A request is either answered in plain HTTP (the ``/healthz`` probe, a 404, a request that is
not a WebSocket upgrade, a refused handshake) or upgraded with the :class:`Connection` the
node admitted. The transports turn an :class:`Answer` into their library's response.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol
from urllib.parse import parse_qs, urlsplit

from agentia import PROTOCOL

if TYPE_CHECKING:
    from gateway.connection import Connection

PATH = "/v1/ws"
PROBES = {"/healthz": "ok\n"}
"""The only plain-HTTP paths of the public port; /readyz and /metrics: gateway/internal.py."""
_EXTRA = {401: (("WWW-Authenticate", 'Bearer realm="agentia"'),), 503: (("Retry-After", "5"),)}


@dataclass(frozen=True, slots=True)
class Answer:
    """A plain HTTP response instead of an upgrade."""

    status: int
    body: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Accept:
    """Upgrade, with this connection (already registered by the node) and subprotocol."""

    conn: Connection
    subprotocol: str | None


class Admission(Protocol):
    """The node's decision on a handshake (see :meth:`EdgeNode.admit`)."""

    def admit(self, headers: dict[str, str], query: str, session: str | None,
              agent: str = "") -> Connection | tuple[int, str]: ...

    def tally(self, name: str) -> None: ...


def origin_allowed(allowed: frozenset[str] | None, origin: str) -> bool:
    """A browser page from another site must not open sockets with its visitors' tokens;
    clients that send no Origin (not browsers) are not concerned."""
    return allowed is None or not origin or origin.rstrip("/").lower() in allowed


def probe(target: str) -> Answer | None:
    """Answer what is not the WebSocket endpoint: a probe or a 404; None for ``PATH``."""
    path = urlsplit(target).path
    if path in PROBES:
        return Answer(200, PROBES[path])
    if path != PATH:
        return Answer(404, f"WebSocket endpoint is {PATH}\n")
    return None


def upgrade_refusal(headers: dict[str, str]) -> Answer | None:
    """For libraries that leave it to us: a request that is not a WebSocket upgrade (RFC 6455
    4.2.1) gets 426. ``headers``: lower-case names."""
    if (headers.get("sec-websocket-key")
            and headers.get("upgrade", "").lower() == "websocket"
            and "upgrade" in headers.get("connection", "").lower()
            and headers.get("sec-websocket-version") == "13"):
        return None
    return Answer(HTTPStatus.UPGRADE_REQUIRED, "a WebSocket upgrade request is required\n",
                  (("Upgrade", "websocket"),))


def admit(node: Admission, target: str, authorization: str, origin: str,
          offered: Iterable[str], user_agent: str = "") -> Answer | Accept:
    """The node's decision on an upgrade of ``PATH``: a refusal, or the connection and the
    subprotocol to choose (``agentia.v1`` when offered). The query's ``session`` and
    ``agent`` (docs/protocol.md §1) go to the node, which checks them."""
    protocols = [p.strip() for value in offered for p in value.split(",")]
    headers = {"authorization": authorization, "origin": origin,
               "sec-websocket-protocol": ", ".join(protocols), "user-agent": user_agent}
    query = urlsplit(target).query
    params = parse_qs(query) if query else {}
    session = params.get("session", [None])[0]
    result = node.admit(headers, query, session, params.get("agent", [""])[0])
    if isinstance(result, tuple):
        status, text = result
        return Answer(status, text + "\n", _EXTRA.get(status, ()))
    return Accept(result, PROTOCOL if PROTOCOL in protocols else None)


def route(node: Admission, target: str, headers: dict[str, str], offered: Iterable[str],
          check_upgrade: bool = True) -> Answer | Accept:
    """The whole decision for one request (``headers``: lower-case names, one value each)."""
    answer = probe(target)
    if answer is None and check_upgrade:
        answer = upgrade_refusal(headers)
        if answer is not None:
            node.tally("handshake_failed")
    if answer is not None:
        return answer
    return admit(node, target, headers.get("authorization", ""), headers.get("origin", ""),
                 offered, headers.get("user-agent", ""))
