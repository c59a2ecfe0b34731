"""Headless Chromium for the browser tests: Debian's `chromium` driven by Playwright, no browser download.

.ci/run installs the package; a missing browser fails the tests (it never skips them). APA_CHROMIUM names another
binary; screenshots go to <temp>/apa-test-artifacts/ (APA_TEST_ARTIFACTS names another folder): the tests write
nothing into the checkout.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = Path(os.environ.get("APA_TEST_ARTIFACTS", Path(tempfile.gettempdir()) / "apa-test-artifacts"))
# What works in a container without a display, a GPU or a network (and never phones home); Playwright adds
# --headless and a fresh profile (--user-data-dir) of its own
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


def chromium_path() -> str:
    path = os.environ.get("APA_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.fail(f"no Chromium at {path}: `apt-get install chromium` (as .ci/run does) or set APA_CHROMIUM")
    return path


@contextmanager
def chromium() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Page:
    """A page that records console errors and uncaught exceptions."""

    def __init__(self, browser, width: int = 1300, height: int = 1000):
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))

    def screenshot(self, name: str, full_page: bool = False) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
