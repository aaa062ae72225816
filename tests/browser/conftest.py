"""Fixtures every Chromium test shares: one headless Chromium per test (Debian's, with the
flags of :data:`tests.browser.test_page.CHROMIUM_ARGS`)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.browser.test_page import CHROMIUM, CHROMIUM_ARGS


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()
