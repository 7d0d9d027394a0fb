"""The canary rollout panel of the Releases page (AppTest), on a rollout arranged in the
database (no processes): progress, the role-checked pause / continue / abort behind a
confirmation, and the start form for an approved version."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services import canary as cn
from services.local.workspace import LocalWorkspace
from ui import state

from .arrange import MODEL, arrange_production, arrange_rollout

APP = str(Path(__file__).resolve().parents[2] / "app.py")
PAGE = "pages/releases.py"
QA, SUPPORT = "qa@contoso.com", "support@contoso.com"


def open_page(actor: str) -> AppTest:
    from streamlit import cache_data
    cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[state.ACTOR] = actor
    at.run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest, kind: str) -> str:
    """The elements' text, with markdown escapes taken out (plan lines are escaped: shown as text)."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(e.value) for e in getattr(at, kind)))


def rollout_of(path: Path) -> cn.Rollout:
    ws = LocalWorkspace(path)
    try:
        return ws.releases.rollout("production")
    finally:
        ws.close()


@pytest.fixture
def arranged_env(demo_env):
    ws = LocalWorkspace(demo_env)
    started = datetime.now(timezone.utc) - timedelta(seconds=60)
    arrange_rollout(ws, started)
    ws.close()
    yield demo_env
    ws = LocalWorkspace(demo_env)
    with ws.db.write() as c:  # the module shares this workspace: end the arranged rollout
        c.execute("UPDATE rollouts SET state = 'aborted' WHERE state IN ('running', 'paused')")
        c.execute("DELETE FROM deployments WHERE endpoint = 'production'")
    ws.close()


def test_the_panel_shows_the_running_step_and_refuses_a_pause_by_support(arranged_env):
    at = open_page(SUPPORT)
    assert "Canary rollout" in texts(at, "subheader")
    assert f"**{MODEL}:3** on `production`" in texts(at, "markdown")
    steps = next(df.value for df in at.dataframe if "step" in df.value.columns)
    assert list(steps["step"]) == ["1: 10 %", "2: 50 %", "3: 100 %"]
    assert list(steps["status"]) == ["▶️ now", "·", "·"]
    at.button(key="rollout.pause").click().run()
    assert "the rollout holds at step 1 of 3 (10 %)" in texts(at, "markdown")
    at.button(key="dialog.confirm").click().run()
    assert "may not promote to production" in texts(at, "error")
    assert rollout_of(arranged_env).state == cn.RUNNING


def test_qa_pauses_then_continues_the_rollout(arranged_env):
    at = open_page(QA)
    at.button(key="rollout.pause").click().run()
    at.text_area(key="dialog.comment").input("checking the logs").run()
    at.button(key="dialog.confirm").click().run()
    assert not at.exception, [e.value for e in at.exception]
    r = rollout_of(arranged_env)
    assert (r.state, r.reason) == (cn.PAUSED, f"paused by {QA}: checking the logs")
    assert "paused" in texts(at, "success")
    at.button(key="rollout.resume").click().run()
    at.button(key="dialog.confirm").click().run()
    assert rollout_of(arranged_env).state == cn.RUNNING


def test_abort_says_what_changes_and_ends_the_rollout(arranged_env):
    at = open_page(QA)
    at.button(key="rollout.abort").click().run()
    said = texts(at, "markdown")
    assert "production traffic → blue (diabetes-regressor:1) 100 % at once" in said
    at.button(key="dialog.confirm").click().run()
    assert "a rollback needs a comment saying why" in texts(at, "error")
    assert rollout_of(arranged_env).state == cn.RUNNING
    at.text_area(key="dialog.comment").input("latency spikes on green").run()
    at.button(key="dialog.confirm").click().run()
    assert rollout_of(arranged_env).state == cn.ABORTED
    assert "Latest rollout: diabetes-regressor:3 — ⛔ aborted" in [e.label for e in at.expander]


@pytest.fixture
def approved_env(demo_env):
    ws = LocalWorkspace(demo_env)
    arrange_production(ws, approved=3)
    ws.close()
    yield demo_env
    ws = LocalWorkspace(demo_env)
    with ws.db.write() as c:
        c.execute("DELETE FROM deployments WHERE endpoint = 'production'")
    ws.close()


def test_start_shows_the_workflows_canary_plan_and_why_it_would_be_refused(approved_env):
    at = open_page(QA)
    at.selectbox(key="rollout.version").set_value(3).run()
    at.button(key="rollout.start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    said = texts(at, "markdown")
    assert f"production: {MODEL}:3 is deployed as green beside {MODEL}:1 (blue) at 0 %" in said
    assert "then it gets 10 % of production's traffic; it moves 10 % → 50 % → 100 %" in said
    assert "max(2.0%, stable's + 1.0%)" in said
    # v3 was approved in the database here, without a smoke test: the plan says the service will refuse it
    assert f"{MODEL}:3 has no passing staging smoke test" in texts(at, "error")
    assert at.button(key="dialog.confirm").disabled and at.button(key="dialog.confirm").label == "Start the canary"
