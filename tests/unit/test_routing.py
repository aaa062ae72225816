"""The public port's HTTP routing (gateway/routing.py) and the transport table, no sockets."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from agentia import PROTOCOL
from gateway import routing as R
from gateway.transport import TRANSPORTS, transport_for

UPGRADE = {"sec-websocket-key": "k", "upgrade": "websocket", "connection": "keep-alive, Upgrade",
           "sec-websocket-version": "13"}


class FakeNode:
    """Admits what carries the right token; records what it was asked."""

    def __init__(self, refusal: tuple[int, str] | None = None) -> None:
        self.refusal = refusal
        self.asked: list[tuple[dict[str, str], str, str | None]] = []
        self.agents: list[str] = []
        self.tallies: Counter[str] = Counter()

    def admit(self, headers: dict[str, str], query: str, session: str | None,
              agent: str = "") -> object:
        self.asked.append((headers, query, session))
        self.agents.append(agent)
        return self.refusal or "conn"

    def tally(self, name: str) -> None:
        self.tallies[name] += 1


@pytest.mark.parametrize(("target", "status"), [
    ("/healthz", 200), ("/healthz?x=1", 200), ("/", 404), ("/v1/ws/", 404), ("/metrics", 404),
    ("/readyz", 404), ("/healthz/x", 404)])
def test_probes_and_404s(target: str, status: int) -> None:
    node = FakeNode()
    answer = R.route(node, target, UPGRADE, ())  # type: ignore[arg-type]
    assert isinstance(answer, R.Answer) and answer.status == status
    assert node.asked == []  # nothing admitted


@pytest.mark.parametrize("missing", sorted(UPGRADE))
def test_not_an_upgrade_is_426_and_counted(missing: str) -> None:
    node = FakeNode()
    headers = {k: v for k, v in UPGRADE.items() if k != missing}
    answer = R.route(node, "/v1/ws", headers, ())  # type: ignore[arg-type]
    assert isinstance(answer, R.Answer) and answer.status == 426
    assert ("Upgrade", "websocket") in answer.headers
    assert node.tallies["handshake_failed"] == 1 and node.asked == []
    # a library that checks the upgrade itself skips ours
    assert isinstance(R.route(node, "/v1/ws", headers, (),  # type: ignore[arg-type]
                              check_upgrade=False), R.Accept)


def test_admission_sees_token_origin_protocols_and_session() -> None:
    node = FakeNode()
    headers = {**UPGRADE, "authorization": "Bearer t", "origin": "https://a.example",
               "user-agent": "phone/1.0"}
    got = R.route(node, "/v1/ws?session=s1&x=2", headers,  # type: ignore[arg-type]
                  ["bearer.tok", f"x, {PROTOCOL}"])
    assert got == R.Accept("conn", PROTOCOL)  # type: ignore[arg-type]
    asked, query, session = node.asked[0]
    assert asked == {"authorization": "Bearer t", "origin": "https://a.example",
                     "sec-websocket-protocol": f"bearer.tok, x, {PROTOCOL}",
                     "user-agent": "phone/1.0"}
    assert (query, session) == ("session=s1&x=2", "s1")
    plain = R.route(node, "/v1/ws", UPGRADE, ())  # type: ignore[arg-type]
    assert plain == R.Accept("conn", None)  # type: ignore[arg-type]
    assert node.asked[1][2] is None
    R.route(node, "/v1/ws?agent=triage&session=s2", UPGRADE, ())  # type: ignore[arg-type]
    R.route(node, "/v1/ws?agent=", UPGRADE, ())  # type: ignore[arg-type]
    assert node.agents == ["", "", "triage", ""]


@pytest.mark.parametrize(("status", "header"), [
    (401, ("WWW-Authenticate", 'Bearer realm="agentia"')), (503, ("Retry-After", "5")),
    (403, None), (429, None), (400, None)])
def test_refusals(status: int, header: tuple[str, str] | None) -> None:
    node = FakeNode((status, "no"))
    answer = R.route(node, "/v1/ws", UPGRADE, ())  # type: ignore[arg-type]
    assert answer == R.Answer(status, "no\n", (header,) if header else ())


def test_transports_are_imported_by_name_and_only_the_one_chosen() -> None:
    for name, module in TRANSPORTS.items():
        other = next(m for n, m in TRANSPORTS.items() if n != name)
        code = (f"import sys; from gateway.transport import transport_for; "
                f"transport_for({name!r}); assert {module!r} in sys.modules; "
                f"assert {other!r} not in sys.modules, 'both loaded'")
        subprocess.run([sys.executable, "-c", code], check=True)
    assert callable(transport_for("picows"))
    with pytest.raises(KeyError):
        transport_for("tornado")
