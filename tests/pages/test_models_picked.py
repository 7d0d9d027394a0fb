"""The Models page's review of a version registered outside Tollgate: its missing evidence, then an
evaluation on a dataset version and target column the reviewer picks, against the champion on the
same rows (``ui.picked_review``); errors say what to pick instead; nothing is recorded."""
from __future__ import annotations

import json

import joblib
import pytest
import streamlit as st
from sklearn.linear_model import LinearRegression

from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from services.picked_evaluation import evaluate_on
from tests.conftest import copy_workspace
from tests.pages.helpers import act, as_read, open_page
from ui import models_view as view

NAME = "diabetes-regressor"
PICKER = view.selected_key(NAME)
FEATURES = ["age", "bmi", "bp", "s5"]
SUPPORT = "support@contoso.com"      # read-only: evaluating records nothing, so a reader may ask


@pytest.fixture
def foreign_env(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "ws")
    ws = LocalWorkspace(path)
    frame = ws.datasets.load("diabetes", 1)
    folder = tmp_path / "outside"
    folder.mkdir()
    joblib.dump(LinearRegression().fit(frame[FEATURES], frame["target"]), folder / "model.pkl")
    (folder / "model.json").write_text(json.dumps({"features": FEATURES}))
    version = ws.models.register(NAME, folder, estimator="outside", metrics={}, run_id=None, dataset=None,
                                 dataset_version=None, created_by=SYSTEM_ACTOR)
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    st.cache_data.clear()
    yield ws, version
    ws.close()


def texts(elements) -> str:
    return as_read("\n".join(e.value for e in elements))


def test_the_review_offers_to_evaluate_on_picked_data_and_shows_the_comparison(foreign_env):
    ws, version = foreign_env
    at = open_page("pages/models.py", SUPPORT, {"version": str(version)})
    assert at.selectbox(key=PICKER).value == version
    assert "cannot be reviewed yet" in texts(at.info) and "dataset version you pick" in texts(at.info)
    assert not at.error and not [d for d in at.dataframe if "gate rule" in d.value.columns]   # nothing until asked
    ref = f"{NAME}:{version}"
    assert at.selectbox(key=f"models.picked.dataset.{ref}").options == ["diabetes:2", "diabetes:1"]
    at.selectbox(key=f"models.picked.dataset.{ref}").set_value("diabetes:2")
    at = act(at)
    assert at.selectbox(key=f"models.picked.target.{ref}.diabetes:2").value == "target"
    audit_before = len(ws.audit.audit())
    at.button(key=f"models.picked.go.{ref}").click()
    at = act(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    expected = evaluate_on(ws, NAME, version, "diabetes", 2, "target")
    champion = ws.models.champion(NAME)
    shown = texts(at.markdown)
    assert f"Evaluated on **{len(expected.actual)} held-out rows of `diabetes:2 (target target)`** (picked" in shown
    assert "no gate decision is made on data picked for a review" in texts(at.caption)
    rmse = next(m for m in at.metric if m.label.startswith("rmse"))
    assert rmse.value == view.fmt_metric(expected.candidate_metrics["rmse"])
    assert f"vs champion {view.fmt_metric(expected.champion_metrics['rmse'])}" in (rmse.proto.delta_description or "")
    assert champion.version != version
    assert len(ws.audit.audit()) == audit_before                      # a read: nothing recorded
    at = act(at)                                                      # kept for this pick across reruns
    assert any(m.label.startswith("rmse") for m in at.metric)


def test_a_target_that_cannot_be_used_says_why(foreign_env):
    ws, version = foreign_env
    ref = f"{NAME}:{version}"
    at = open_page("pages/models.py", SUPPORT, {"version": str(version)})
    at.selectbox(key=f"models.picked.dataset.{ref}").set_value("diabetes:1")
    at = act(at)
    at.selectbox(key=f"models.picked.target.{ref}.diabetes:1").set_value("sex")   # the champion predicts from sex
    at.button(key=f"models.picked.go.{ref}").click()
    at = act(at)
    assert not at.exception
    assert "needs columns the evaluation data lacks: sex" in texts(at.error)
    assert not any(m.label.startswith("rmse") for m in at.metric)
