"""Every page of the running console, opened in headless Chromium (Debian's).

Starts ``streamlit run app.py`` on 127.0.0.1 against a copy of the demo
workspace, loads each page as a user would, and checks that it rendered its
title and data with no exception or error box. Stops the server afterwards.
"""
from __future__ import annotations

import shutil
import socket

import pytest

pytestmark = pytest.mark.browser

playwright = pytest.importorskip("playwright.sync_api")
from scripts.screenshot import CHROMIUM_ARGS, start_console, wait_rendered  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

# page path -> text that must appear once it has rendered with the demo data
PAGES = {
    "": "Overview",
    "datasets": "diabetes",
    "runs": "completed",
    "models": "diabetes-regressor",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def console(demo_ws_path):
    port = free_port()
    proc = start_console(f"local://{demo_ws_path}", port)
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def browser():
    if not shutil.which("chromium") and not __import__("os").path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs it)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.mark.parametrize("path", list(PAGES))
def test_page_renders_with_data(console, browser, path):
    page = browser.new_page(viewport={"width": 1440, "height": 1000})
    try:
        page.goto(f"{console}/{path}")
        wait_rendered(page)
        main = page.locator("[data-testid='stMain']")
        assert PAGES[path] in main.inner_text()
        problems = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']").all_inner_texts()
        assert problems == [], problems
    finally:
        page.close()
