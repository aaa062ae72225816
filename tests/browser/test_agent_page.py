"""The chat page's agent-native view (issue 14) in headless Chromium against ``agentia up``
(two edges, a private Redis, a worker with the demo agents, the control plane serving the page).

A booking that needs approval: the card comes, survives a reload (rebuilt from the replayed
log: a request without its ``approval_result`` is still open), is approved there, disables
itself, and the booked reply arrives; after another reload it shows the outcome. A tool call
for "what is 6 * 7" is shown collapsed and opens onto its arguments and result; the agent's
state and name are shown. Picking ``triage`` (``?agent=triage``) starts a conversation whose
handoff to the demo agent is shown.
Screenshots go to test-output/browser/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

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

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium"),
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    """One ``agentia up`` for the module: each test has its own browser context, so its own
    user (a random dev-token guest) and conversation."""
    s = System(tmp_path_factory.mktemp("agent-page") / "state")
    yield s
    s.stop()


def record_agent_events(page: Page) -> None:
    page.evaluate("""() => { window.__agent = [];
        for (const name of ['tool_call', 'tool_result', 'agent_state', 'handoff',
                            'approval_request', 'approval_result']) {
          window.agentiaApp.client.on(name, (e) => window.__agent.push([name, e]));
        } }""")


def agent_events(page: Page) -> list[tuple[str, dict[str, Any]]]:
    return [(n, e) for n, e in page.evaluate("window.__agent")]


def test_a_booking_is_approved_on_its_card_after_a_reload(system: System,
                                                          browser: Browser) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    watch(page, problems)
    page.goto(system.api + "/")
    wait_synced(page)

    # 1. The booking pauses on an approval card (open, both buttons enabled).
    send(page, "book a table for two at seven")
    card = page.get_by_test_id("approval")
    expect(card).to_have_attribute("data-state", "open", timeout=30_000)
    expect(card).to_contain_text("book_table")
    expect(card.locator("dd")).to_have_text(["2", "7:00"])
    expect(card.get_by_test_id("approve")).to_be_enabled()
    expect(last_reply(page).locator(".agent-state")).to_have_text("Waiting for approval")
    expect(last_reply(page)).to_have_attribute("data-status", "streaming")
    call_id = card.get_attribute("data-call-id")
    shot(page, "agent-01-approval-card")

    # 2. A reload rebuilds the card from the log: still open, the turn still waiting.
    page.reload()
    wait_synced(page)
    card = page.get_by_test_id("approval")
    expect(card).to_have_count(1)
    expect(card).to_have_attribute("data-state", "open")
    assert card.get_attribute("data-call-id") == call_id
    record_agent_events(page)
    shot(page, "agent-02-card-after-reload")

    # 3. Approve: the card disables itself at once, then shows the outcome; the booking is made.
    card.get_by_test_id("approve").click()
    expect(card.get_by_test_id("approve")).to_be_disabled()
    expect(card).to_have_attribute("data-state", "approved", timeout=30_000)
    user = page.evaluate("window.agentiaApp.user")
    expect(card.locator(".approval-outcome")).to_have_text(f"Approved by {user}")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "done", timeout=30_000)
    expect(reply.locator(".text")).to_contain_text("Booked a table for 2 at 7:00")
    expect(reply.locator(".agent-state")).to_be_hidden()
    expect(reply.locator(".agent-name")).to_contain_text("demo")
    got = agent_events(page)
    results = [e for n, e in got if n == "approval_result"]
    assert [(r["call_id"], r["approved"], r["by"]) for r in results] == [(call_id, True, user)]
    assert any(n == "tool_result" and e["name"] == "book_table" for n, e in got), got
    shot(page, "agent-03-approved-and-booked")

    # 4. Another reload: the card shows the outcome, with no button left to press.
    page.reload()
    wait_synced(page)
    card = page.get_by_test_id("approval")
    expect(card).to_have_attribute("data-state", "approved")
    expect(card.get_by_test_id("approve")).to_be_hidden()
    expect(last_reply(page).locator(".text")).to_contain_text("Booked a table for 2 at 7:00")
    shot(page, "agent-04-outcome-after-reload")
    assert problems == []
    context.close()


def test_a_tool_call_is_shown_collapsed_with_its_arguments_and_result(
        system: System, browser: Browser) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    watch(page, problems)
    page.goto(system.api + "/")
    wait_synced(page)
    record_agent_events(page)

    send(page, "what is 6 * 7")
    reply = page.locator(".msg.assistant").first  # (last_reply would move to the next turn)
    expect(reply).to_have_attribute("data-status", "done", timeout=30_000)
    call = reply.get_by_test_id("tool-call")
    expect(call).to_have_count(1)
    expect(call.locator(".tool")).to_have_text("calculate")
    expect(call).to_have_attribute("data-status", "done")
    expect(call.locator(".tool-args")).to_be_hidden()  # collapsed until clicked
    call.locator("summary").click()
    expect(call.locator(".tool-args")).to_be_visible()
    args = call.locator(".tool-args").text_content() or ""
    assert re.sub(r"\s+", " ", args).strip() == '{ "expression": "6 * 7" }', args
    expect(call.locator(".tool-output")).to_contain_text("42")
    expect(reply.locator(".text")).to_contain_text("42")
    expect(reply.locator(".agent-name")).to_contain_text("demo")
    states = [e["state"] for n, e in agent_events(page) if n == "agent_state"]
    assert states[0] == "thinking" and "tool" in states and states[-1] == "idle", states
    shot(page, "agent-05-tool-call-open")

    # the open tool call stays open while the page redraws (another turn streams)
    send(page, "hello again")
    expect(page.locator(".msg.assistant")).to_have_count(2)
    expect(last_reply(page)).to_have_attribute("data-status", "done", timeout=30_000)
    expect(call.locator(".tool-args")).to_be_visible()
    assert problems == []
    context.close()


def test_the_triage_agent_hands_off_and_the_page_says_so(system: System,
                                                          browser: Browser) -> None:
    problems: list[str] = []
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    watch(page, problems)
    page.goto(system.api + "/")
    wait_synced(page)
    picker = page.get_by_test_id("agent-picker")  # GET /v1/agents: demo first, the default
    expect(picker.locator("option")).to_have_text(["demo", "triage"], timeout=10_000)
    expect(picker).to_have_value("demo")
    first = page.evaluate("window.agentiaApp.client.session")
    picker.select_option("triage")  # a new conversation with ?agent=triage
    page.wait_for_url(re.compile(r"[?&]agent=triage"))
    wait_synced(page)
    assert page.evaluate("window.agentiaApp.client.agent") == "triage"
    assert page.evaluate("window.agentiaApp.client.session") != first
    expect(picker).to_have_value("triage")
    send(page, "what is 6 * 7")
    reply = last_reply(page)
    expect(reply).to_have_attribute("data-status", "done", timeout=30_000)
    expect(reply.locator(".handoff")).to_have_text(re.compile(r"triage.*→.*demo", re.I))
    expect(reply.locator(".agent-name")).to_contain_text("demo")
    expect(reply.locator(".text")).to_contain_text("42")
    shot(page, "agent-06-handoff")
    assert problems == []
    context.close()
