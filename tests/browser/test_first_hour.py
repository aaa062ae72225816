"""The first hour in the browser (issue 11): ``/docs`` renders with no network beyond the
system itself, and the no-microphone toast leaves the Send button visible and clickable.

Both against ``agentia up`` (one edge, a private Redis, the control plane serving the page) in
headless Chromium.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest
from playwright.sync_api import Browser, FloatRect, Page, Route, expect

from tests.browser.test_page import CHROMIUM, SHOTS, System, wait_synced, watch

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not CHROMIUM.exists(),
                       reason="needs Debian's chromium at /usr/bin/chromium (apt-get install "
                              "chromium); browser downloads are not possible here"),
]


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    s = System(Path(tmp_path_factory.mktemp("first-hour")) / "state", edges=1)
    yield s
    s.stop()


def offline(page: Page, api: str) -> list[str]:
    """Abort every request to a host other than the control plane's; returns what was asked."""
    own = urlsplit(api).netloc
    refused: list[str] = []

    def only_ours(route: Route) -> None:
        url = route.request.url
        if urlsplit(url).netloc == own or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort("internetdisconnected")

    page.route("**/*", only_ours)
    return refused


def test_api_docs_render_with_no_network(system: System, browser: Browser) -> None:
    problems: list[str] = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch(page, problems)
    refused = offline(page, system.api)
    page.goto(system.api + "/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Agentia control plane",
                                                                      timeout=20_000)
    expect(page.locator(".opblock-summary-path", has_text="/healthz")).to_be_visible()
    page.screenshot(path=str(SHOTS / "first-hour-docs-offline.png"), full_page=True)
    assert refused == [], f"/docs asked other hosts: {refused}"
    assert problems == []


def _rect(page: Page, selector: str) -> FloatRect:
    box = page.locator(selector).first.bounding_box()
    assert box is not None, f"{selector} is not rendered"
    return box


def _overlap(a: FloatRect, b: FloatRect) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


@pytest.mark.parametrize("viewport", [(1280, 820), (390, 844)], ids=["desktop", "phone"])
def test_no_microphone_toast_does_not_cover_send(system: System, browser: Browser,
                                                 viewport: tuple[int, int]) -> None:
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    # a machine with no microphone, on a server with voice on (whether or not this one has a
    # LiveKit server: the microphone is checked before any call is asked for)
    page.add_init_script("""navigator.mediaDevices.enumerateDevices = async () => [];""")

    def voice_on(route: Route) -> None:
        reply = route.fetch()
        route.fulfill(response=reply, json={**orjson.loads(reply.body()), "voice": True})

    page.route("**/v1/config", voice_on)
    page.goto(system.api + "/")
    wait_synced(page)
    page.get_by_test_id("talk").click()
    toast = page.locator(".toast", has_text="No microphone")
    expect(toast).to_be_visible(timeout=10_000)
    page.screenshot(path=str(SHOTS / f"first-hour-toast-{viewport[0]}.png"))
    assert not _overlap(_rect(page, ".toast"), _rect(page, "[data-testid=send]"))
    assert not _overlap(_rect(page, ".toast"), _rect(page, "[data-testid=input]"))
    # and Send is what a click there reaches (nothing on top of it)
    box = _rect(page, "[data-testid=send]")
    hit = page.evaluate("([x, y]) => document.elementFromPoint(x, y)?.closest('#send')?.id",
                        [box["x"] + box["width"] / 2, box["y"] + box["height"] / 2])
    assert hit == "send"
