"""The Releases page: the board, the gates' evidence, the actions behind confirmations, the audit trail.

The ``live`` fixture deploys the champion to production and a candidate to staging
(as lee@contoso.com, who is both QA and ML lead: the four-eyes case) once for the
module, ~40 s, and stops every process in teardown.
"""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import re

from services.entities import ModelVersion, Stage
from services.errors import Conflict, Forbidden, InvalidInput
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from services.stages import awaiting_decision
from tests.conftest import copy_workspace
from tests.pages.helpers import as_read
from ui import plan_dialog as pd_, releases_view as rv, state

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/releases.py"
DEPLOYER = "lee@contoso.com"  # ml_lead and qa: may deploy, and may approve what someone else deployed
LONG = 180                    # seconds for a run that promotes (a blue/green deploy on a loaded machine)


def open_page(actor: str | None = None) -> AppTest:
    from streamlit import cache_data
    cache_data.clear()  # tests also write through the services; the page must not show stale reads
    at = AppTest.from_file(APP, default_timeout=60)
    if actor:
        at.session_state[state.ACTOR] = actor
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def act_as(at: AppTest, actor: str) -> None:
    # under AppTest the page runs without app.py's sidebar (see tests/pages/test_endpoints.py): set the identity
    at.session_state[state.ACTOR] = actor


def texts(at: AppTest, kind: str) -> str:
    """The elements' text, with markdown escapes taken out (plan lines are escaped: shown as text)."""
    return as_read("\n".join(str(e.value) for e in getattr(at, kind)))


def best_candidate(ws) -> ModelVersion:
    champion = ws.models.champion(ws.policy.model_name)
    newer = [v for v in ws.models.versions(ws.policy.model_name) if v.version > champion.version]
    by_rmse = sorted(newer, key=lambda v: v.metrics["rmse"])
    return next(v for v in by_rmse if ws.evaluation.gate(v.name, v.version).passed)


@pytest.fixture(scope="module")
def live(demo_ws):
    ws = demo_ws
    champion = ws.models.champion(ws.policy.model_name)
    candidate = best_candidate(ws)
    try:
        ws.releases.deploy(champion.name, champion.version, ws.policy.endpoints.production, SYSTEM_ACTOR)
        ws.releases.deploy(candidate.name, candidate.version, ws.policy.endpoints.staging, DEPLOYER)
        yield ws, champion, candidate
    finally:
        ws.endpoints.down(SYSTEM_ACTOR)


@pytest.fixture
def live_env(live, demo_env):
    return live


def assert_evidence_kept(at: AppTest, candidate: ModelVersion, champion: ModelVersion) -> None:
    """``candidate``'s gate evidence, after a promote or a rollback: against the champion it was approved
    against, still readable (before, the page said "is the champion: nothing to compare it with")."""
    assert at.selectbox(key="releases.version").value == candidate.version
    assert f"vs {champion.ref}, the champion it was approved against" in texts(at, "markdown")
    assert "Passes the quality gate" in texts(at, "success")
    assert f"Δ = {candidate.ref} − {champion.ref}" in texts(at, "caption")


# --- the board ------------------------------------------------------------------

def test_journey_marks():
    assert rv.journey(Stage.REGISTERED) == ["○"] * 4
    assert rv.journey(Stage.AWAITING_APPROVAL) == ["✅", "✅", "○", "○"]
    assert rv.journey(Stage.REJECTED) == ["✅", "✅", "❌", "○"]
    assert rv.journey(Stage.ROLLED_BACK) == ["✅", "✅", "✅", "↩️"]


# --- the page ------------------------------------------------------------------

@pytest.fixture
def stopped_env(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "ws")
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    ws = LocalWorkspace(path)
    yield ws
    ws.endpoints.down(SYSTEM_ACTOR)
    ws.close()


def test_page_without_endpoints_shows_the_board_and_refuses_support(stopped_env):
    at = open_page("support@contoso.com")
    assert texts(at, "title") == "Releases"
    board = at.dataframe[0].value
    assert set(board["stage"]) == {"⚪ registered (not deployed)"}
    champion = stopped_env.models.champion(stopped_env.policy.model_name)
    assert f"The `champion` alias points at **{champion.ref}**" in texts(at, "markdown")
    assert "Never smoke-tested" in texts(at, "caption")

    at.button(key="releases.deploy").click().run()
    assert "the service will refuse" in texts(at, "warning")  # said before, in the dialog
    assert "production is not touched" in texts(at, "markdown")
    at.button(key="dialog.confirm").click().run()
    assert "support@contoso.com (support) may not deploy" in texts(at, "error")
    assert stopped_env.endpoints.supervisor_pid() is None


def test_release_workflow_on_the_page(live_env, monkeypatch):
    ws, champion, candidate = live_env
    served_csv: list[bytes] = []
    real_csv = rv.audit_csv
    monkeypatch.setattr(rv, "audit_csv", lambda frame: served_csv.append(real_csv(frame)) or served_csv[-1])

    at = open_page(DEPLOYER)
    assert at.selectbox(key="releases.version").value == candidate.version  # the one waiting for a decision
    board = at.dataframe[0].value.set_index("version")
    assert board.loc[candidate.ref, "stage"] == "⏳ awaiting approval"
    assert board.loc[champion.ref, "stage"] == "🟢 in production"
    rows = set(board.index)
    # the evidence, side by side
    assert "Passes the quality gate" in texts(at, "success")
    assert "6 cases passed" in texts(at, "success")
    cases = next(d.value for d in at.dataframe if "case" in d.value.columns)
    assert list(cases.columns[:4]) == ["case", "passed", "expected", "got"] and len(cases) == 6

    # four eyes: the deployer may not approve, and the dialog says so before anything is pressed
    at.button(key="releases.approve").click().run()
    assert "may not also approve it (four eyes)" in texts(at, "error")
    assert at.button(key="dialog.confirm").disabled
    assert ws.releases.state(candidate.name, candidate.version).stage == Stage.AWAITING_APPROVAL
    at.button(key="dialog.cancel").click().run()
    assert not any(b.key == "dialog.confirm" for b in at.button)  # the dialog is closed

    # an ML lead approves, with a comment
    act_as(at, "lead@contoso.com")
    at.button(key="releases.approve").click().run()
    at.text_area(key="dialog.comment").input("Better on all three metrics; data tests clean.").run()
    at.button(key="dialog.confirm").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert f"{candidate.ref} is approved by `lead@contoso.com`" in texts(at, "success")
    release = ws.releases.state(candidate.name, candidate.version)
    assert release.stage == Stage.APPROVED and release.decided_by == "lead@contoso.com"
    csv = served_csv[-1].decode()
    approve_rows = [line for line in csv.splitlines() if ",approve," in line]
    assert approve_rows and "lead@contoso.com" in approve_rows[0] and "data tests clean" in approve_rows[0]

    # QA promotes: blue/green with progress, then production answers with the candidate
    act_as(at, "qa@contoso.com")
    at.button(key="releases.promote").click().run()
    dialog = texts(at, "markdown")
    assert f"champion alias moves v{champion.version} → v{candidate.version}" in dialog
    at.button(key="dialog.confirm").click().run(timeout=LONG)
    assert not at.exception, [e.value for e in at.exception]
    assert f"{candidate.ref} serves production" in texts(at, "success")
    steps = texts(at, "caption")         # the steps, each with its time, as they happened
    assert re.search(rf"✓ deployment \w+ \({re.escape(candidate.ref)}\) created at 0 % \(\d+\.\d s\)", steps), steps
    for step in ("healthy", "smoke test of", "traffic shifted to", "kept warm for rollback"):
        assert step in steps, step
    answer = ws.endpoints.invoke("production", {"data": [[59, 2, 32.1, 101, 157, 93.2, 38, 4, 4.8598, 87]]})
    assert answer.status == 200 and answer.model == candidate.ref
    assert ws.models.champion(candidate.name).version == candidate.version
    # the board keeps its rows when the champion moves, and the evidence stays the one approved
    assert set(at.dataframe[0].value["version"]) == rows
    assert_evidence_kept(at, candidate, champion)

    # QA rolls back: the warm champion gets the traffic back (a comment is required)
    at.button(key="releases.rollback").click().run()
    assert f"champion alias moves v{candidate.version} → v{champion.version}" in texts(at, "markdown")
    at.text_area(key="dialog.comment").input("p95 doubled since the promote").run()
    at.button(key="dialog.confirm").click().run()
    assert "production rolled back" in texts(at, "success")
    assert ws.endpoints.get("production").live.model_ref == champion.ref
    assert ws.releases.state(candidate.name, candidate.version).stage == Stage.ROLLED_BACK
    assert set(at.dataframe[0].value["version"]) == rows
    assert_evidence_kept(at, candidate, champion)
    # Overview's queue: the rolled-back version awaits no decision
    from streamlit import cache_data
    cache_data.clear()
    overview = AppTest.from_file(APP, default_timeout=60).run()
    waiting = awaiting_decision(ws.releases.states(candidate.name))
    assert {m.label: m.value for m in overview.metric}["Awaiting decision"] == str(len(waiting)) == "0"

    # a second rollback would bring back the version just rolled back: the dialog says it is refused
    assert "rolled back: not a rollback target" in texts(at, "caption")
    at.button(key="releases.rollback").click().run()
    assert "This will be refused" in texts(at, "error") and "which was itself rolled back" in texts(at, "error")
    assert at.button(key="dialog.confirm").disabled
    at.button(key="dialog.cancel").click().run()


def test_smoke_test_reject_and_rollback_refusals(live):
    ws, champion, candidate = live
    smoke = ws.releases.plan_smoke_test(candidate.name, candidate.version)
    assert smoke.env == "staging"
    outcome = pd_.perform(ws, smoke, "lead@contoso.com")
    assert outcome.ok and "cases passed" in outcome.message

    other = next(v for v in ws.models.versions(ws.policy.model_name)
                 if v.version not in (champion.version, candidate.version))
    reject = ws.releases.plan_reject(other.name, other.version)
    with pytest.raises(InvalidInput, match="needs a comment"):
        pd_.perform(ws, reject, "lead@contoso.com", "  ")
    pd_.perform(ws, reject, "lead@contoso.com", "overfits: train r2 far above test r2")
    assert ws.releases.state(other.name, other.version).stage == Stage.REJECTED
    with pytest.raises(Conflict, match="changed since the plan was made"):   # the plan of before the rejection
        pd_.perform(ws, reject, "lead@contoso.com", "again")

    rollback = ws.releases.plan_rollback("production")
    with pytest.raises(Forbidden, match="may not roll back"):
        pd_.perform(ws, rollback, "support@contoso.com", "no")


def test_audit_filters_and_csv(live):
    ws, _, _ = live
    frame = rv.audit_frame(ws.releases.audit())
    deploys = rv.filter_audit(frame, ["deploy"], [], "")
    assert set(deploys["action"]) == {"deploy"} and set(deploys["target"]) == {"staging", "production"}
    by_lee = rv.filter_audit(frame, [], [DEPLOYER], "staging")
    assert len(by_lee) and set(by_lee["actor"]) == {DEPLOYER}
    csv = rv.audit_csv(deploys).decode().splitlines()
    assert csv[0] == "time,actor,role,action,target,comment,before,after,id"
    assert len(csv) == len(deploys) + 1
    assert rv.readable({"traffic": {"blue": 0, "green": 100}}) == "traffic: {blue: 0, green: 100}"
