"""The chat page shows what a backend does to a conversation (issue 15), in headless Chromium
against ``agentia up``: a message an operator posts with a service token
(``POST /v1/sessions/{id}/messages``) appears in the open page at once, stays once after a
reload (replayed from the log), and the agent's next reply shows it saw it; a takeover
(``POST``/``DELETE /v1/sessions/{id}/takeover``) is shown when it starts and when the
conversation is given back. Screenshots go to test-output/browser/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.browser.test_page import (
    CHROMIUM,
    System,
    last_reply,
    send,
    shot,
    wait_synced,
    watch,
)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(240),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    s = System(tmp_path_factory.mktemp("operator-page") / "state", edges=1)
    yield s
    s.stop()


def service_token(scope: str) -> str:
    """A service token minted by ``agentia token`` as a developer would (the dev secret, which
    ``agentia up``'s processes accept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
    out = subprocess.run([sys.executable, "-m", "launch.cli", "token", "--user", "desk",
                          "--scope", scope], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=True)
    return out.stdout.strip()


NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""Loopback calls never go through an ``http_proxy`` of the environment."""


def call(method: str, url: str, token: str, body: dict[str, object] | None = None) -> int:
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode()
                                 if body is not None else None,
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with NO_PROXY.open(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def session_of(page: Page) -> str:
    sid = page.evaluate("window.agentiaApp.client.session")
    assert isinstance(sid, str) and sid
    return sid


def test_an_operator_message_shows_in_the_page_and_after_a_reload(system: System,
                                                                    browser: Browser) -> None:
    problems: list[str] = []
    page = browser.new_context(viewport={"width": 1280, "height": 820}).new_page()
    watch(page, problems)
    page.goto(system.api + "/")
    wait_synced(page)
    send(page, "hello")
    expect(last_reply(page)).to_contain_text("You said: hello", timeout=30_000)
    sid = session_of(page)

    token = service_token("sessions:write sessions:operate")
    text = "Your refund of 20 euros is approved."
    assert call("POST", f"{system.api}/v1/sessions/{sid}/messages", token,
                {"text": text, "role": "operator"}) in (200, 201, 202)
    note = page.locator(".notice.posted")
    expect(note).to_have_count(1, timeout=15_000)
    expect(note).to_contain_text(text)
    expect(note).to_contain_text("Operator desk")

    page.reload()
    wait_synced(page)
    expect(page.locator(".notice.posted")).to_have_count(1, timeout=15_000)
    expect(page.locator(".notice.posted")).to_contain_text(text)
    # it sits after the first turn, before the next one (offset order)
    send(page, "what did the operator say")
    expect(last_reply(page)).to_contain_text("refund of 20 euros", timeout=30_000)
    order = page.evaluate("""() => [...document.querySelectorAll('#turns > *')]
        .map((n) => n.classList.contains('notice') ? 'notice' : 'turn')""")
    assert order == ["turn", "notice", "turn"], order


    # an operator takes the conversation over: shown on the page, the agent holds off, and the
    # page shows the conversation given back
    assert call("POST", f"{system.api}/v1/sessions/{sid}/takeover", token) == 200
    expect(page.locator(".notice.takeover")).to_have_count(1, timeout=15_000)
    expect(page.locator(".notice.takeover").last).to_contain_text("desk took over")
    send(page, "is anyone there?")
    expect(page.locator(".msg.user").last).to_contain_text("is anyone there?", timeout=15_000)
    expect(last_reply(page)).to_contain_text("an operator has the conversation", timeout=15_000)
    assert call("DELETE", f"{system.api}/v1/sessions/{sid}/takeover", token) == 200
    expect(page.locator(".notice.takeover")).to_have_count(2, timeout=15_000)
    expect(page.locator(".notice.takeover").last).to_contain_text("gave this conversation back")
    shot(page, "operator-message")
    assert not problems, problems
