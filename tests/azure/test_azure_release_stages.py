"""One decision queue and one vocabulary on the replayed Azure workspace (``azure+replay://``): the
release stage kept in the model versions' ``tollgate.stage`` tags is what Overview counts, the Models
table and the Releases board say, through approve, reject, promote and rollback; the board keeps its
rows when the champion moves, and a version's evidence stays the one it was approved on. Azure ML's
own ``stage`` field shows apart, as "azure stage" (``azure+replay://real``)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.stages import awaiting_decision
from tests.azure.conftest import console_on
from tests.pages.helpers import as_read
from ui import state

APP = str(Path(__file__).resolve().parents[2] / "app.py")
MODEL = "diabetes-regressor"
QA, LEAD = "qa@contoso.com", "lead@contoso.com"


def page(name: str, pick: int | None = None) -> AppTest:
    """The page as it reads now: every write below goes through the services, so the reads are dropped."""
    st.cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(f"pages/{name}.py").run()
    if pick is not None:
        at.selectbox(key="releases.version").set_value(pick).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def queue(at: AppTest) -> int:
    return int({m.label: m.value for m in at.metric}["Awaiting decision"])


def models_stages(at: AppTest) -> dict[int, str]:
    table = next(d.value for d in at.dataframe if "release stage" in d.value.columns)
    return dict(zip(table["version"], table["release stage"]))


def board(at: AppTest) -> pd.DataFrame:
    return at.dataframe[0].value.set_index("version")


def evidence(at: AppTest) -> str:
    return as_read("\n".join(str(e.value) for kind in ("markdown", "success", "error", "info")
                             for e in getattr(at, kind)))


def stage_everywhere(version: int) -> tuple[str, str]:
    """(what the Models table says, what the Releases board says) of ``version``."""
    return models_stages(page("models"))[version], board(page("releases")).loc[f"{MODEL}:{version}", "stage"]


def test_one_queue_and_one_vocabulary_through_approve_reject_promote_rollback(replay_env):
    at = page("overview")
    ws = state.workspace()              # the workspace the console opened: writes below are seen by it
    ws.endpoints.poll_s = 0.01
    waiting = awaiting_decision(ws.releases.states(MODEL))
    assert [s.model_version for s in waiting] == [3] and queue(at) == 1      # the demo: v3 passed staging
    assert stage_everywhere(3) == ("awaiting approval", "⏳ awaiting approval")
    assert stage_everywhere(1) == ("in production", "🟢 in production")

    ws.releases.approve(MODEL, 3, LEAD, "better rmse on diabetes:2")
    assert queue(page("overview")) == 0 == len(awaiting_decision(ws.releases.states(MODEL)))
    assert stage_everywhere(3) == ("approved", "👍 approved")   # Models said "candidate" here before

    ws.releases.deploy(MODEL, 4, "staging", QA)
    assert queue(page("overview")) == 1 == len(awaiting_decision(ws.releases.states(MODEL)))
    ws.releases.reject(MODEL, 4, LEAD, "worse on the older patients")
    assert queue(page("overview")) == 0
    assert stage_everywhere(4) == ("rejected", "❌ rejected")

    rows = set(board(page("releases")).index)
    ws.releases.promote(MODEL, 3, QA, "weekly release")
    assert ws.models.champion(MODEL).version == 3
    promoted = page("releases", pick=3)
    assert set(board(promoted).index) == rows                     # no row left the board with the champion
    shown = evidence(promoted)
    assert f"vs {MODEL}:1, the champion it was approved against" in shown and "Passes the quality gate" in shown
    assert stage_everywhere(3) == ("in production", "🟢 in production")
    assert stage_everywhere(1)[0] == "retired (replaced in production)"

    ws.releases.rollback("production", QA, "p95 regression")
    assert queue(page("overview")) == 0                           # a rolled-back version waits for no decision
    rolled_back = page("releases", pick=3)
    assert set(board(rolled_back).index) == rows
    shown = evidence(rolled_back)
    assert f"vs {MODEL}:1, the champion it was approved against" in shown and "Passes the quality gate" in shown
    assert stage_everywhere(3) == ("rolled back", "↩️ rolled back")


def test_azure_ml_own_stage_shows_apart_from_the_release_stage(monkeypatch):
    with console_on(monkeypatch, "azure+replay://real"):
        at = page("models")
        at.selectbox(key="models.name").set_value("test_269749567585").run()
        table = next(d.value for d in at.dataframe if "release stage" in d.value.columns)
        # Azure's "Production" (set by whoever registered it) is not the release workflow's "in production":
        # Tollgate never deployed it
        assert table[["version", "release stage", "azure stage"]].values.tolist() == [
            [3, "registered (not deployed)", "Production"]]
        assert "Azure stage: Production" in [t.value for t in at.text][0]
        assert any("release stage: registered (not deployed)" in m.value for m in at.markdown)
