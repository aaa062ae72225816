"""``agentia chat`` with the demo agent (real edge, worker and Redis): a booking that needs
approval is put to the user, who answers on stdin; the tool call is printed with its
arguments, the outcome and the booked reply follow. A second run answers "n": not booked."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, Cluster

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.mark.parametrize(("answer", "outcome", "reply"), [
    ("y", "[approved by alice]", "Booked a table for 2 at 7:00"),
    ("n", "[rejected by alice]", "not booked"),
])
def test_chat_asks_for_the_approval_on_stdin(cluster: Cluster, answer: str, outcome: str,
                                             reply: str) -> None:
    edge = cluster.edge()
    cluster.worker("sessions.demo:demo_agent")
    chat = subprocess.Popen(
        [sys.executable, "-m", "launch.cli", "chat", "--url", f"ws://127.0.0.1:{edge.port}/v1/ws",
         "--user", "alice"], cwd=ROOT, env=cluster.env, stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # the answer waits in the pipe until chat asks for it (it reads a line at a time)
        out, err = chat.communicate(f"book a table for two at seven\n{answer}\n".encode(),
                                    timeout=90)
    finally:
        if chat.poll() is None:
            chat.kill()
            chat.wait()
    text = out.decode()
    assert chat.returncode == 0 and b"Traceback" not in err, err
    assert '[tool: book_table {"people":2,"time":"7:00"}]' in text, text
    assert '[approve book_table {"people":2,"time":"7:00"}? y/N]' in text, text
    assert text.index("y/N]") < text.index(outcome) < text.index(reply), text
