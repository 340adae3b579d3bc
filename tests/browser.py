"""Headless Chromium for the web page's end-to-end tests: Debian's chromium (installed by
`make setup`), driven by Playwright with the system browser as its executable."""

from __future__ import annotations

import contextlib
import shutil

from playwright.sync_api import sync_playwright

#: Debian's browser; Playwright downloads none.
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

#: Headless, as root, on a machine whose network is closed: no sandbox (root), and nothing
#: that calls home (background networking, component updates, sync), so no connection is
#: attempted but to the page under test.
FLAGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@contextlib.contextmanager
def chromium():
    """A fresh headless browser (Playwright gives it an empty profile of its own); yields
    Playwright's Browser."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=list(FLAGS))
        try:
            yield browser
        finally:
            browser.close()
