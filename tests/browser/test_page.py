"""The chat page (web/) in headless Chromium against the whole system: ``agentia up`` with two
edges, a private Redis, a worker on the demo model and the control plane serving the page.

One conversation, step by step: a streamed reply, a reload that rebuilds the history, a second
tab that sees every event, and a SIGKILL of the edge the page is connected to, after which the
badge goes to "reconnecting" then "resumed" and the conversation goes on; then a reload in the
middle of a reply, which shows the text so far at once. Screenshots of every
step go to test-output/browser/.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, expect

from agentia.supervise import start

ROOT = Path(__file__).resolve().parent.parent.parent
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / "test-output" / "browser"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install "
                              "chromium); browser downloads are not possible here"),
]


class System:
    """``agentia up`` as a child process, with what its AGENTIA_UP_READY line says."""

    def __init__(self, state_dir: Path, edges: int = 2) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTIA_")}
        env |= {"AGENTIA_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"}
        env.pop("OPENAI_API_KEY", None)
        self.log_path = ROOT / "test-output" / f"browser-up-{os.getpid()}-{time.time_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115
        self.proc, self.info = start(
            [sys.executable, "-m", "launch.cli", "up", "--port", "0", "--api-port", "0",
             "--edges", str(edges)], env, "AGENTIA_UP_READY", 120,
            what=f"agentia up (log {self.log_path})", cwd=ROOT, stderr=self.log, echo=self.log,
            supervised=False)
        threading.Thread(target=self._drain, daemon=True).start()
        self.api = self.info["api"].rstrip("/")
        # edges=<pid>:<port>,<pid>:<port>
        self.edges: dict[int, int] = {}
        for item in self.info["edges"].split(","):
            pid, port = item.split(":")
            self.edges[int(port)] = int(pid)

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.log.write(line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    s = System(tmp_path / "state")
    yield s
    s.stop()


def watch(page: Page, problems: list[str]) -> None:
    """Collect uncaught exceptions and console errors (a refused WebSocket is not one of ours)."""
    page.on("pageerror", lambda exc: problems.append(f"pageerror: {exc}"))

    def console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "WebSocket" not in msg.text:
            problems.append(f"console: {msg.text}")

    page.on("console", console)


def badge(page: Page) -> Any:
    return page.get_by_test_id("state-badge")


def wait_synced(page: Page, timeout: float = 20_000) -> None:
    expect(badge(page)).to_have_attribute("data-state", re.compile("^(connected|resumed)$"),
                                          timeout=timeout)


def last_reply(page: Page) -> Any:
    return page.locator(".msg.assistant").last


def send(page: Page, text: str) -> None:
    page.get_by_test_id("input").fill(text)
    page.get_by_test_id("input").press("Enter")


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_chat_page_streams_reloads_shares_tabs_and_survives_an_edge_crash(
        system: System, browser: Browser) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 820})
    page = context.new_page()
    watch(page, problems)

    # 1. The page loads, gets a dev token and connects.
    page.goto(system.api + "/")
    wait_synced(page)
    if system.info["voice"] == "on":  # agentia up found a LiveKit server and the voice extra
        expect(page.get_by_test_id("talk")).to_be_enabled()
    else:
        expect(page.get_by_test_id("talk")).to_be_disabled()
        expect(page.locator("#talk-wrap")).to_have_attribute("data-tooltip",
                                                             re.compile("not available"))
    shot(page, "01-empty")

    # 2. A message, and its reply streamed in several chunks.
    page.evaluate("""() => { window.__events = []; window.__chunks = [];
        window.agentiaApp.client.on('event', (e) => window.__events.push(e));
        window.agentiaApp.client.on('chunk', (f) => window.__chunks.push(f)); }""")
    send(page, "hello from the browser")
    expect(page.locator(".msg.user .bubble").first).to_have_text("hello from the browser")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "done", timeout=30_000)
    expect(reply).to_contain_text("You said: hello from the browser")
    events: list[dict[str, Any]] = page.evaluate("window.__events")
    turn = next(e["offset"] for e in events if e["type"] == "user")
    chunks = [c for c in page.evaluate("window.__chunks") if c["turn"] == turn]
    final = next(e for e in events if e["type"] == "reply" and e["turn"] == turn)
    assert len(chunks) >= 2, "the reply was not streamed"
    assert [c["seq"] for c in chunks] == list(range(1, len(chunks) + 1))
    assert "".join(c["text"] for c in chunks) == final["text"]
    offsets = [e["offset"] for e in events]
    assert offsets == sorted(set(offsets)), "events applied out of order or twice"
    session = page.evaluate("window.agentiaApp.client.session")
    shot(page, "02-streamed-reply")

    # 3. A tool call, shown as a pill.
    send(page, "what is 6 * 7")
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(last_reply(page)).to_have_attribute("data-status", "done", timeout=30_000)
    expect(last_reply(page).locator(".tool")).to_have_text("calculate")
    expect(last_reply(page)).to_contain_text("42")

    # 4. A reload resumes the same session from 0 and rebuilds the history.
    page.reload()
    wait_synced(page)
    assert page.evaluate("window.agentiaApp.client.session") == session
    expect(page.locator(".msg.user .bubble")).to_have_text(["hello from the browser",
                                                            "what is 6 * 7"])
    expect(page.locator('.msg.assistant[data-status="done"]')).to_have_count(2)
    expect(page.locator(".msg.assistant").first).to_contain_text("You said: hello from the browser")
    expect(page.locator(".session.current")).to_contain_text("hello from the browser",
                                                              timeout=10_000)
    shot(page, "03-after-reload")

    # 5. A second tab opens the same conversation; a message from it shows in both.
    page2 = context.new_page()
    watch(page2, problems)
    page2.goto(system.api + "/")
    wait_synced(page2)
    assert page2.evaluate("window.agentiaApp.client.session") == session
    expect(page2.locator('.msg.assistant[data-status="done"]')).to_have_count(2)
    send(page2, "what time is it, tab two")
    for p in (page, page2):
        expect(p.locator(".msg.user .bubble").last).to_have_text("what time is it, tab two")
        expect(last_reply(p)).to_have_attribute("data-status", "done", timeout=30_000)
        expect(last_reply(p).locator(".tool")).to_have_text("current_time")
        expect(p.locator(".msg.assistant")).to_have_count(3)
    shot(page2, "04-second-tab")
    shot(page, "05-first-tab-sees-it")

    # 6. Kill the edge the first tab is connected to: reconnecting, then resumed elsewhere.
    url = page.evaluate("window.agentiaApp.client.url")
    port = urlsplit(url).port
    assert port in system.edges, f"{url} is not one of the edges {system.edges}"
    mark = page.evaluate("window.agentiaApp.stateLog.length")
    os.kill(system.edges[port], signal.SIGKILL)
    page.wait_for_function(
        "n => window.agentiaApp.stateLog.slice(n).some((s) => s.state === 'reconnecting')",
        arg=mark, timeout=20_000)
    shot(page, "06-edge-killed")
    expect(badge(page)).to_have_attribute("data-state", "resumed", timeout=30_000)
    states = [s["state"] for s in page.evaluate("window.agentiaApp.stateLog")[mark:]]
    assert states[0] == "reconnecting" and states[-1] == "resumed", states
    new_url = page.evaluate("window.agentiaApp.client.url")
    assert urlsplit(new_url).port != port
    shot(page, "07-resumed-on-the-other-edge")

    # 7. The conversation goes on, in both tabs, without duplicates.
    wait_synced(page2, timeout=30_000)
    send(page, "still there after the crash?")
    for p in (page, page2):
        expect(p.locator(".msg.assistant")).to_have_count(4, timeout=30_000)
        expect(last_reply(p)).to_have_attribute("data-status", "done", timeout=30_000)
        expect(last_reply(p)).to_contain_text("You said: still there after the crash?")
        expect(p.locator(".msg.user .bubble")).to_have_count(4)
        expect(p.locator("#pending .msg")).to_have_count(0)
    shot(page, "08-new-message-after-crash")
    shot(page2, "09-second-tab-after-crash")

    # 8. A new conversation starts empty; the old one stays in the list.
    page.get_by_test_id("new-conversation").click()
    expect(page.locator(".turn")).to_have_count(0)
    wait_synced(page)
    expect(page.locator("#conv-title")).to_have_text("New conversation")
    expect(page.locator(f'.session[data-session="{session}"]')).to_be_visible()
    shot(page, "10-new-conversation")

    # 9. A reload mid-reply shows the text so far at once (the resume's partial: chunks are
    # not in the log), then the rest of the reply.
    words = " ".join(f"w{i}" for i in range(300))  # ~9 s of demo reply at 30 ms a word
    send(page, words)
    expect(last_reply(page).locator(".text")).to_contain_text("You said: w0 w1", timeout=30_000)
    expect(last_reply(page)).to_have_attribute("data-status", "streaming")
    page.reload()
    wait_synced(page)  # after the resume's answer: its partial is applied
    # the first render after it (the page draws at most every 16 ms): the text so far, while
    # the reply still streams (without the partial it would show nothing until the reply)
    shown = page.wait_for_function("""() => { const n = [...document.querySelectorAll(
        '.msg.assistant')].at(-1); const text = n?.querySelector('.text').textContent;
        return text && [n.dataset.status, text]; }""", timeout=10_000).json_value()
    assert shown[0] == "streaming", f"the reply ended before the reload: {shown}"
    assert shown[1].startswith("You said: w0 w1"), shown
    shot(page, "11-reloaded-mid-reply")
    expect(last_reply(page)).to_have_attribute("data-status", "done", timeout=30_000)
    expect(last_reply(page)).to_contain_text("w298 w299")

    assert problems == []
    context.close()


def test_another_users_conversation_is_refused_and_a_new_one_starts(
        system: System, browser: Browser) -> None:
    """The edge refuses a foreign session after the upgrade (close 4501); the page says so and
    starts a new conversation instead of retrying the refused one."""
    problems: list[str] = []
    alice = browser.new_context()
    page = alice.new_page()
    watch(page, problems)
    page.goto(system.api + "/")
    wait_synced(page)
    owned = page.evaluate("window.agentiaApp.client.session")
    alice.close()

    mallory = browser.new_context()
    mallory.add_init_script(f"""
        localStorage.setItem('agentia:user', 'mallory');
        localStorage.setItem('agentia:mallory:session', JSON.stringify({{session: '{owned}'}}));
    """)
    page = mallory.new_page()
    watch(page, problems)
    page.goto(system.api + "/")
    expect(page.locator(".toast").last).to_contain_text("belongs to another user",
                                                        timeout=20_000)
    wait_synced(page)
    mine = page.evaluate("window.agentiaApp.client.session")
    assert mine and mine != owned
    assert problems == []
    mallory.close()
