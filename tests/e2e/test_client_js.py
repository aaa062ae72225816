"""The JS SDK (clients/js) under Node against real edges, a worker and Redis, once per edge
transport: send, stream, resume after a dropped socket, replay for a new client, and stop on
another user's session (4501). The scenario is clients/js/test/edge.test.js."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.conftest import ROOT, Cluster, token

PKG = ROOT / "clients" / "js"


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js 20+ on PATH")
def test_js_client_against_real_edges(cluster: Cluster) -> None:
    edges = [cluster.edge(), cluster.edge()]
    cluster.worker()
    env = {**os.environ,
           "AGENTIA_TEST_WS_URLS": ",".join(f"ws://127.0.0.1:{e.port}/v1/ws" for e in edges),
           "AGENTIA_TEST_TOKEN": token("js-alice"), "AGENTIA_TEST_TOKEN_OTHER": token("js-mallory")}
    # Node 20 has a global WebSocket only behind this flag (Node 22 has it by default)
    out = subprocess.run(["node", "--experimental-websocket", "--no-warnings", "--test",
                          "test/edge.test.js"], cwd=PKG, env=env, capture_output=True,
                         text=True, timeout=90)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"^# pass 1$", out.stdout, re.M), out.stdout[-2000:]
    assert re.search(r"^# skipped 0$", out.stdout, re.M), out.stdout[-2000:]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs Node.js 20+ on PATH")
def test_js_client_agent_events_and_approve(cluster: Cluster) -> None:
    """clients/js/test/agent-edge.test.js: tool events, agent_state, an approval answered from
    a second client on the other edge, no_such_approval once answered."""
    edges = [cluster.edge(), cluster.edge()]
    cluster.worker("sessions.demo:demo_agent")
    env = {**os.environ,
           "AGENTIA_TEST_WS_URLS": ",".join(f"ws://127.0.0.1:{e.port}/v1/ws" for e in edges),
           "AGENTIA_TEST_TOKEN": token("js-agent")}
    out = subprocess.run(["node", "--experimental-websocket", "--no-warnings", "--test",
                          "test/agent-edge.test.js"], cwd=PKG, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert re.search(r"^# pass 1$", out.stdout, re.M), out.stdout[-2000:]
    assert re.search(r"^# skipped 0$", out.stdout, re.M), out.stdout[-2000:]
