"""The chat page's live caption of a voice call's caller (issue 16), in headless Chromium:
interim ``transcript`` frames (off the log) sent to the page's session replace one another in
one caption; the caller's final ``transcript`` (a log event) replaces the caption; an empty
interim clears it. Real processes: Redis, an edge, the control plane serving the page; the
frames are written as the voice worker writes them (``Bus.stream_frame``, ``Bus.append``)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import orjson
import pytest
from playwright.sync_api import Browser, expect

from sessions import events as E
from sessions.bus import Bus, connect
from tests.browser.test_page import CHROMIUM, SHOTS, wait_synced, watch
from tests.conftest import Cluster

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium"),
]


def send_to(cluster: Cluster, sid: str, *writes: tuple[str, str]) -> None:
    """Interims (``("interim", text)``) and final caller transcripts (``("final", text)``)."""
    async def go() -> None:
        bus = Bus(connect(cluster.env["AGENTIA_REDIS_URL"]),
                  prefix=cluster.env["AGENTIA_REDIS_PREFIX"], shards=4)
        try:
            for kind, text in writes:
                if kind == "interim":
                    frame = orjson.dumps(E.interim_transcript(text, "u1"))
                    assert await bus.stream_frame(sid, frame)
                else:
                    await bus.append(sid, E.transcript(text, True, "user"))
        finally:
            await bus.close()
    with ThreadPoolExecutor(1) as pool:  # playwright's sync API runs a loop in this thread
        pool.submit(asyncio.run, go()).result(30)


def test_the_callers_caption_is_replaced_live_then_by_the_final(
        cluster: Cluster, browser: Browser) -> None:
    edge = cluster.edge()
    api = cluster.api(AGENTIA_DEV_TOKENS="true",
                      AGENTIA_WS_URLS=f"ws://127.0.0.1:{edge.port}/v1/ws")
    problems: list[str] = []
    page = browser.new_page()
    watch(page, problems)
    page.goto(f"http://127.0.0.1:{api.port}/")
    wait_synced(page)
    sid = page.evaluate("window.agentiaApp.client.session")
    caption = page.locator("#pending .caption")

    send_to(cluster, sid, ("interim", "what"), ("interim", "what time"))
    expect(caption).to_have_count(1)
    expect(caption).to_have_text("what time")
    expect(caption).not_to_have_class("final")
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "caption-interim.png"))

    send_to(cluster, sid, ("final", "What time is it?"))
    expect(caption).to_have_text("What time is it?")
    expect(caption).to_have_class("msg user caption final")

    send_to(cluster, sid, ("interim", "and the"))
    expect(caption).to_have_text("and the")
    send_to(cluster, sid, ("interim", ""))  # the utterance gave nothing: cleared
    expect(caption).to_have_count(0)
    # a final transcript without a caption to replace (none live: a reload's replay) shows none
    page.reload()
    wait_synced(page)
    send_to(cluster, sid, ("final", "Hello?"), ("interim", "bye"))
    expect(caption).to_have_text("bye")  # the frames after it did arrive
    assert problems == []
