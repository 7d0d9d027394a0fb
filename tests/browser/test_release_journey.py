"""The release workflow clicked through in headless Chromium (Debian's), as three users.

The console runs against a copy of the demo workspace in which the champion (v1)
serves production. In one browser session, switching identity in the sidebar's
"Acting as" picker:

1. qa deploys the best candidate to staging (button, dialog, blue/green progress);
   it awaits approval; qa's own Approve is refused.
2. lead sees the evidence (quality gate, smoke test) and approves with a comment.
3. qa promotes it: the Endpoints page and a real scoring request say it serves production.
4. support's rollback is refused; support reads the Endpoints page and its logs.
5. qa rolls back: production answers with v1 again.
6. The audit trail names each step and who did it.

Screenshots of every step go to the test's tmp folder (printed with ``-s``).
"""
from __future__ import annotations

import csv
import io
import re
import socket
from pathlib import Path

import pytest
import requests

from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from tests.release.conftest import ADMIN, FEATURES_ROW, LEAD, MODEL, QA, SUPPORT, wait_for_exit

pytestmark = pytest.mark.browser

playwright = pytest.importorskip("playwright.sync_api")
from playwright.sync_api import Page, expect  # noqa: E402

from scripts.screenshot import CHROMIUM_ARGS, start_console, wait_rendered  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
BLUE_GREEN_MS = 120_000   # a deploy or promote: 10–25 s here, generous for a loaded machine
STEP_MS = 30_000          # anything else the page does
PAYLOAD = '{"data": [' + str(FEATURES_ROW) + "]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- setup ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ws(demo_ws_path):
    """The demo copy with the champion serving production; everything stopped afterwards."""
    ws = LocalWorkspace(demo_ws_path)
    try:
        ws.releases.deploy(MODEL, ws.models.champion(MODEL).version, "production", SYSTEM_ACTOR)
        yield ws
    finally:
        ws.endpoints.down(SYSTEM_ACTOR)
        leftovers = wait_for_exit(ws.root, 15)
        ws.close()
        assert not leftovers, f"processes left behind by {ws.root}: {leftovers}"


@pytest.fixture(scope="module")
def console(ws):
    port = free_port()
    proc = start_console(f"local://{ws.root}", port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except Exception:
            proc.kill()
            proc.wait(5)
        assert proc.returncode is not None


@pytest.fixture(scope="module")
def page(console):
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs it)")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1440, "height": 1000}, accept_downloads=True)
        page = context.new_page()
        page.set_default_timeout(STEP_MS)
        # from the root, then the sidebar's links: a deep link into a fresh `streamlit run app.py`
        # server would open the page without app.py's navigation and sidebar
        page.goto(console)
        wait_rendered(page)
        yield page
        browser.close()


# --- what a user does ---------------------------------------------------------------

class Journey:
    """The browser session and the screenshots of its steps."""

    def __init__(self, page: Page, shots: Path):
        self.page, self.shots, self.n = page, shots, 0

    @property
    def main(self):
        return self.page.get_by_test_id("stMain")

    @property
    def dialog(self):
        return self.page.get_by_role("dialog")

    def shot(self, name: str, at: str | None = None) -> None:
        """Streamlit scrolls inside the page, so full_page shows one screen: scroll to ``at`` first."""
        if at:
            self.main.get_by_role("heading", name=at).first.scroll_into_view_if_needed()
        self.n += 1
        self.page.screenshot(path=str(self.shots / f"{self.n:02d}-{name}.png"), full_page=True)

    def settle(self) -> None:
        wait_rendered(self.page, STEP_MS)

    def act_as(self, identity: str) -> None:
        picker = self.page.get_by_test_id("stSidebar").get_by_role("combobox", name="Acting as")
        picker.click()
        self.page.get_by_role("option", name=re.compile(rf"^{re.escape(identity)} ")).click()
        expect(picker).to_have_value(re.compile(rf"^{re.escape(identity)} "))
        self.settle()

    def open_page(self, title: str) -> None:
        """Through the sidebar navigation: the same session, so the identity stays."""
        self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
        expect(self.main.get_by_role("heading", level=1)).to_have_text(title)
        self.settle()

    def pick_version(self, ref: str) -> None:
        box = self.main.get_by_role("combobox", name="Version", exact=True)
        if not box.input_value().startswith(f"{ref} "):
            box.click()
            self.page.get_by_role("option", name=re.compile(rf"^{re.escape(ref)} ")).click()
            self.settle()
        expect(box).to_have_value(re.compile(rf"^{re.escape(ref)} "))

    def click(self, button: str) -> None:
        self.main.get_by_role("button", name=button).click()
        expect(self.dialog).to_be_visible()

    def confirm(self, button: str, comment: str | None = None) -> None:
        if comment is not None:
            self.dialog.get_by_role("textbox").fill(comment)
        self.dialog.get_by_role("button", name=button, exact=True).click()

    def outcome(self, expected: str, timeout_ms: float = STEP_MS) -> str:
        """The flash message of a confirmed action; fails with the dialog's error if it was refused."""
        done = self.main.get_by_test_id("stAlertContentSuccess").filter(has_text=expected)
        failed = self.dialog.get_by_test_id("stAlertContentError")
        expect(done.or_(failed).first).to_be_visible(timeout=timeout_ms)
        assert not failed.count(), f"expected “{expected}”, got: {failed.first.inner_text()}"
        self.settle()
        return done.inner_text()

    def refusal(self) -> str:
        """The error a refused action shows in its dialog (after confirming, or in the plan before)."""
        error = self.dialog.get_by_test_id("stAlertContentError")
        expect(error).to_be_visible()
        return error.inner_text()

    def cancel(self) -> None:
        self.dialog.get_by_role("button", name="Cancel").click()
        expect(self.dialog).to_be_hidden()
        self.settle()


def production_serves(ws: LocalWorkspace) -> str:
    """The model version production answers with, asked as a client would (key in hand)."""
    uri = ws.endpoints.get("production").scoring_uri
    key = ws.endpoints.keys("production", ADMIN)[0]
    r = requests.post(uri, PAYLOAD, timeout=30,
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}"})
    assert r.status_code == 200, r.text
    return r.headers["x-tollgate-model"]


def best_candidate(ws: LocalWorkspace):
    champion = ws.models.champion(MODEL)
    candidates = [v for v in ws.models.versions(MODEL) if v.version != champion.version and not v.archived]
    return min(candidates, key=lambda v: v.metrics["rmse"])


# --- the journey ----------------------------------------------------------------------

def test_release_journey_as_qa_lead_and_support(ws, page, tmp_path_factory):
    shots = tmp_path_factory.mktemp("release-journey")
    print(f"\nscreenshots: {shots}")
    j = Journey(page, shots)
    champion, candidate = ws.models.champion(MODEL), best_candidate(ws)
    old, new = champion.ref, candidate.ref
    assert production_serves(ws) == old

    # 1. qa deploys the candidate to staging; qa may not approve it
    j.open_page("Releases")
    j.act_as(QA)
    expect(j.main).to_contain_text(f"acting as {QA}")
    j.pick_version(new)
    j.click("Deploy to staging")
    expect(j.dialog).to_contain_text(f"Deploy {new} to staging")
    j.shot("qa-deploy-dialog")
    j.confirm("Deploy to staging")
    expect(j.dialog).to_contain_text(re.compile(r"to staging… \d+ s"))  # the blue/green progress
    j.shot("qa-deploy-progress")
    assert "health probe and smoke test passed" in j.outcome("serves staging", BLUE_GREEN_MS)
    expect(j.main).to_contain_text(f"{new} is awaiting approval")
    j.shot("qa-deployed-awaiting-approval")

    j.click("Approve")       # qa deployed it: four eyes, and qa is no ML lead — said before anything is pressed
    refused = j.refusal()
    assert f"{QA} deployed {new} and may not also approve it (four eyes)" in refused, refused
    expect(j.dialog).to_contain_text("you need the role admin or ml_lead")
    expect(j.dialog.get_by_role("button", name="Approve", exact=True)).to_be_disabled()
    j.shot("qa-approve-refused")
    j.cancel()
    expect(j.main).to_contain_text(f"{new} is awaiting approval")

    # 2. lead reviews the evidence and approves
    j.act_as(LEAD)
    j.pick_version(new)
    expect(j.main.get_by_test_id("stAlertContentSuccess").filter(has_text="Passes the quality gate")).to_be_visible()
    # the innermost block around the smoke test's heading: its bordered box
    smoke = j.main.get_by_test_id("stVerticalBlock").filter(has=page.get_by_text("Smoke test", exact=True)).last
    expect(smoke.get_by_test_id("stAlertContentSuccess")).to_contain_text("passed")
    expect(smoke).to_contain_text("on staging/")
    j.shot("lead-evidence", at="Evidence")
    j.click("Approve")
    j.confirm("Approve", comment="Gate passed, smoke test green: ship it")
    assert f"approved by {LEAD}" in j.outcome("is approved by")
    expect(j.main).to_contain_text(f"{new} is approved")
    expect(j.main).to_contain_text("Gate passed, smoke test green: ship it")
    j.shot("lead-approved")

    # 3. qa promotes it; production serves it
    j.act_as(QA)
    j.pick_version(new)
    j.click("Promote to production")
    j.confirm("Promote to production")
    j.outcome(f"{new} serves production", BLUE_GREEN_MS)
    expect(j.main).to_contain_text(f"{new} is in production")
    j.shot("qa-promoted")
    assert production_serves(ws) == new
    j.open_page("Endpoints")
    serving = j.main.get_by_test_id("stMetric").filter(has_text="Serving").first
    expect(serving).to_contain_text(f"v{candidate.version}")
    j.shot("endpoints-after-promote")

    # 4. support may not roll back, but reads the endpoints and their logs
    j.act_as(SUPPORT)
    j.open_page("Releases")
    j.click("Roll back production")
    expect(j.dialog).to_contain_text("you need the role")
    j.confirm("Roll back")
    refused = j.refusal()
    assert f"{SUPPORT} (support) may not roll back" in refused, refused
    j.shot("support-rollback-refused")
    j.cancel()
    assert production_serves(ws) == new
    j.open_page("Endpoints")
    expect(serving).to_contain_text(f"v{candidate.version}")
    log = j.main.get_by_test_id("stExpander").filter(has_text="Console log").filter(has_text=new).first
    log.locator("summary").click()
    log_text = log.get_by_test_id("stCode")
    expect(log_text).to_be_visible()
    assert log_text.inner_text().strip() not in ("", "(empty)")
    j.shot("support-endpoints-logs")

    # 5. qa rolls back: production answers with the previous version
    j.act_as(QA)
    j.open_page("Releases")
    j.click("Roll back production")
    j.confirm("Roll back", comment="browser journey: back to the champion")
    j.outcome("production rolled back")
    expect(j.main).to_contain_text(f"{old} on")  # the "Production now" card
    j.shot("qa-rolled-back")
    assert production_serves(ws) == old

    # 6. the audit trail: each step with its actor (the CSV is exactly what the table shows)
    with page.expect_download() as download:
        j.main.get_by_role("button", name="Download CSV").click()
    j.settle()  # the download button reruns the page
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    steps = {(r["action"], r["actor"], r["target"]) for r in rows}
    for step in [("deploy", QA, "staging"), ("approve", LEAD, new), ("promote", QA, "production"),
                 ("rollback", QA, "production")]:
        assert step in steps, f"{step} not in the audit trail: {sorted(steps)}"
    # the refused attempts changed nothing, so they are not recorded as steps
    assert ("approve", QA, new) not in steps and ("rollback", SUPPORT, "production") not in steps
    expect(j.main).to_contain_text(f"{len(rows)} of {len(rows)} events")
    j.shot("audit-trail", at="Audit trail")
