"""Support's journey in headless Chromium (Debian's): Monitoring → a top error's sample
request id → Request lookup shows that request's payload, error and log lines → the
Logs page finds its lines by the id.

The console runs on a copy of the demo workspace into which telemetry rows, log files
and a promote event were written directly (``tests/pages/monitoring_data.py``): no
endpoint has to run. Screenshots go to the test's tmp folder (printed with ``-s``).
"""
from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import pytest

from tests.pages.monitoring_data import ROW, seed_monitoring

pytestmark = pytest.mark.browser

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import expect  # noqa: E402

from scripts.screenshot import CHROMIUM_ARGS, start_console, wait_rendered  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
STEP_MS = 30_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def seeded(demo_ws_path):
    return seed_monitoring(demo_ws_path)


@pytest.fixture(scope="module")
def console(demo_ws_path, seeded):
    port = free_port()
    proc = start_console(f"local://{demo_ws_path}", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except Exception:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def page(console):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 1400})
        page.set_default_timeout(STEP_MS)
        page.goto(console)
        wait_rendered(page)
        yield page
        browser.close()


def test_monitoring_to_request_lookup_to_logs(page, seeded, tmp_path_factory):
    shots = tmp_path_factory.mktemp("monitoring-journey")
    print(f"\nscreenshots: {shots}")
    main = page.get_by_test_id("stMain")

    def shot(name: str) -> None:
        page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

    # Monitoring, through the sidebar's Monitor section
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Monitoring").click()
    expect(main.get_by_role("heading", level=1)).to_have_text("Monitoring")
    wait_rendered(page)
    # it opens on the health line's 15 minutes; the seeded 500s are 20–40 minutes old
    main.get_by_text("1h", exact=True).first.click()
    wait_rendered(page)
    expect(main).to_contain_text("Per model version")
    charts = main.locator(".js-plotly-plot")
    expect(charts.first).to_be_visible()
    assert charts.first.locator("g.trace.scatter").count() >= 3  # v1, v2, no answer (and their rows)
    expect(main).to_contain_text("ValueError: Input contains NaN")
    shot("01-monitoring")

    # the top error's sample request → Request lookup, in the same session
    sample = main.get_by_role("link", name=seeded.error_id)
    sample.scroll_into_view_if_needed()
    sample.click()
    expect(main.get_by_role("heading", level=1)).to_have_text("Request lookup")
    wait_rendered(page)
    assert re.search(rf"[?&]request_id={re.escape(seeded.error_id)}\b", page.url), page.url
    expect(main.get_by_role("textbox", name="Request id")).to_have_value(seeded.error_id)
    expect(main.get_by_test_id("stAlertContentError").first).to_contain_text("HTTP 500")
    expect(main).to_contain_text(seeded.error_message)
    codes = main.get_by_test_id("stCode")
    payload = codes.filter(has_text='"data"').first.inner_text()
    assert json.loads(payload) == {"data": [ROW]}
    expect(codes.filter(has_text=f"request_id={seeded.error_id}").first).to_be_visible()
    shot("02-lookup-error")

    # another id typed in: its payload and answer
    box = main.get_by_role("textbox", name="Request id")
    box.fill(seeded.sample_id)
    box.press("Enter")
    expect(main.get_by_test_id("stAlertContentSuccess").first).to_contain_text(seeded.sample_id)
    wait_rendered(page)
    expect(codes.filter(has_text="predictions").first).to_contain_text(str(seeded.sample_prediction))
    assert f"request_id={seeded.sample_id}" in page.url
    shot("03-lookup-typed")

    # Logs: the request's lines found by its id
    page.get_by_test_id("stSidebarNav").get_by_role("link", name="Logs").click()
    expect(main.get_by_role("heading", level=1)).to_have_text("Logs")
    wait_rendered(page)
    search = main.get_by_role("textbox", name="Search")
    search.fill(seeded.sample_id)
    search.press("Enter")
    expect(main).to_contain_text(f"containing “{seeded.sample_id}”")
    wait_rendered(page)
    block = main.get_by_test_id("stCode").first.inner_text()
    lines = [line for line in block.splitlines() if line.strip()]
    assert lines and all(seeded.sample_id in line for line in lines), block
    shot("04-logs-search")
