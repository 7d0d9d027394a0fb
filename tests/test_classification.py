"""Classification, end to end: a binary classifier on scikit-learn's bundled breast-cancer data
(no download) in a local workspace whose policy says ``task = "binary"`` — trained by the
pipeline, compared on the same held-out rows, gated on F1 / ROC AUC, deployed for real (the
inference server on score.py) and smoke-tested for label and probability parity."""
from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from pipeline.train import split
from services.entities import CheckStatus, RunStatus, TrainingSpec
from services.errors import InvalidInput
from services.evaluation import evaluation_split
from services.gate import decide
from services.local.workspace import LocalWorkspace
from services.metrics import compute
from services.permissions import SYSTEM_ACTOR
from services.policy import parse_policy
from services.release import smoke
from tests.release.conftest import wait_for_exit

MODEL = "breast-cancer"
LEAD, QA = "lead@contoso.com", "qa@contoso.com"
POLICY = textwrap.dedent(f"""
    [project]
    model_name = "{MODEL}"
    target = "target"
    experiment = "breast-cancer-retrain"
    task = "binary"
    [gate]
    require_improvement = "f1"
    [[gate.rules]]
    metric = "f1"
    max_regression = 0.0
    [[gate.rules]]
    metric = "roc_auc"
    max_regression = 0.01
    min = 0.9
    [smoke_test]
    cases = 5
    latency_requests = 0
    [roles]
    "{LEAD}" = "ml_lead"
    "{QA}" = "qa"
""")
CLASSIFICATION_METRICS = {"accuracy", "balanced_accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"}


def train(ws, estimator: str, params: dict):
    run = ws.jobs.submit(TrainingSpec(dataset="breast-cancer", dataset_version=1, estimator=estimator,
                                      params=params, experiment="bc"), LEAD)
    run = ws.jobs.wait(run.id, timeout_s=240)
    assert run.status == RunStatus.COMPLETED, f"{run.error}\n{ws.jobs.log(run.id)}"
    return run


@pytest.fixture(scope="module")
def bc(tmp_path_factory):
    """The workspace with breast-cancer:1, a weak champion (v1) and a better candidate (v2)."""
    root = tmp_path_factory.mktemp("bc") / "ws"
    root.mkdir()
    (root / "tollgate.toml").write_text(POLICY)
    ws = LocalWorkspace(root)
    data = root.parent / "breast-cancer.csv"
    load_breast_cancer(as_frame=True).frame.to_csv(data, index=False)
    dv = ws.datasets.register("breast-cancer", data, actor=LEAD)
    assert (dv.rows, dv.tests_status) == (569, CheckStatus.PASS)
    champion = train(ws, "logistic_regression", {"C": 0.001})    # heavily regularised: the weaker one
    candidate = train(ws, "logistic_regression", {"C": 1.0})
    try:
        yield ws, champion, candidate
    finally:
        ws.endpoints.down(SYSTEM_ACTOR)
        leftovers = wait_for_exit(ws.root, 15)
        ws.close()
        assert not leftovers, f"processes left behind: {leftovers}"


def test_training_logs_the_classification_metrics_on_a_stratified_split(bc):
    ws, champion, candidate = bc
    assert ws.policy.task == "binary"
    for run in (champion, candidate):
        assert set(run.metrics) == CLASSIFICATION_METRICS | {"train_accuracy", "train_f1", "cv_log_loss"}
        assert not {"rmse", "mae", "r2"} & set(run.metrics)
        assert len(ws.jobs.metric_history(run.id, "cv_log_loss")) == 5   # the per-fold curve
    assert (champion.model_version, candidate.model_version) == (1, 2)
    assert candidate.gate.passed and candidate.gate.champion == f"{MODEL}:1"
    assert [c.metric for c in candidate.gate.checks] == ["f1", "roc_auc"]

    # the registered model is the one the run scored, on held-out rows in the data's class proportions
    frame = ws.datasets.load("breast-cancer", 1)
    _, X_test, _, y_test = split(frame, "target", 0.2, 42, "binary")
    assert y_test.mean() == pytest.approx(frame["target"].mean(), abs=0.01)
    model = ws.models.load(MODEL, 2)
    expected = compute("binary", y_test, model.predict(X_test), model.predict_proba(X_test), model.classes_)
    assert candidate.metrics["f1"] == pytest.approx(expected["f1"])
    assert candidate.metrics["roc_auc"] == pytest.approx(expected["roc_auc"])
    described = json.loads((ws.root / "models" / MODEL / "2" / "model.json").read_text())
    assert (described["task"], described["classes"]) == ("binary", [0, 1])


def test_a_regressor_is_refused_for_a_classification_task(bc):
    ws, _, _ = bc
    with pytest.raises(InvalidInput, match="does not serve the task 'binary'") as err:
        ws.jobs.submit(TrainingSpec(dataset="breast-cancer", dataset_version=1, estimator="ridge"), LEAD)
    assert "logistic_regression" in err.value.hint
    with pytest.raises(InvalidInput, match=r"parameter C=1000000000.0 of logistic_regression is out of bounds"):
        ws.jobs.submit(TrainingSpec(dataset="breast-cancer", dataset_version=1, estimator="logistic_regression",
                                    params={"C": 1e9}), LEAD)


def test_compare_scores_both_classifiers_on_the_same_rows(bc):
    ws, _, _ = bc
    c = ws.evaluation.compare(MODEL, 2)
    assert c.task == "binary" and c.classes == (0.0, 1.0) and c.champion.version == 1
    assert set(c.candidate_metrics) == set(c.champion_metrics) == CLASSIFICATION_METRICS
    X, y = evaluation_split(ws.datasets.load("breast-cancer", 1), ws.policy)
    assert list(c.actual) == list(y.astype(float))
    assert len(c.candidate_pred) == len(c.champion_pred) == len(c.candidate_proba) == len(c.champion_proba) == len(y)
    champion_model = ws.models.load(MODEL, 1)
    np.testing.assert_allclose(c.champion_proba, champion_model.predict_proba(X))
    assert c.champion_metrics == pytest.approx(compute("binary", y, champion_model.predict(X),
                                                       champion_model.predict_proba(X), champion_model.classes_))
    assert c.candidate_metrics["f1"] > c.champion_metrics["f1"]
    assert c.gate.passed, c.gate.reasons


def test_the_gate_passes_and_fails_on_f1_and_roc_auc_rules(bc):
    ws, _, _ = bc
    worse = ws.evaluation.compare(MODEL, 1, champion_version=2)   # the weak one judged against the better
    assert not worse.gate.passed
    assert any(r.startswith("f1: must improve") for r in worse.gate.reasons)
    assert [c.metric for c in worse.gate.checks if not c.passed] == ["f1"]

    c = ws.evaluation.compare(MODEL, 2)
    strict = parse_policy(POLICY.replace("min = 0.9", "min = 0.9999"), source="strict.toml")
    gate = decide(c.candidate_metrics, c.champion_metrics, strict, champion_ref=f"{MODEL}:1")
    assert not gate.passed and [x.metric for x in gate.checks if not x.passed] == ["roc_auc"]
    assert "below the floor 0.9999" in gate.reasons[0]

    # a classifier without predict_proba has no ROC AUC: the rule fails and says why
    labels_only = {k: v for k, v in c.candidate_metrics.items() if k not in ("roc_auc", "log_loss")}
    gate = decide(labels_only, c.champion_metrics, ws.policy)
    assert not gate.passed and "no predict_proba" in gate.reasons[0]


def test_score_py_answers_labels_probabilities_and_classes(bc, monkeypatch):
    ws, _, _ = bc
    import score
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(ws.root / "models" / MODEL / "2"))
    monkeypatch.setattr(score, "task", score.task)   # the module's state goes back after the test
    monkeypatch.setattr(score, "with_probabilities", score.with_probabilities)
    monkeypatch.setattr(score, "model", score.model)
    monkeypatch.setattr(score, "features", score.features)
    score.init()
    X, _ = evaluation_split(ws.datasets.load("breast-cancer", 1), ws.policy)
    rows = X.head(3)
    answer = score.run(json.dumps({"data": rows.values.tolist()}))
    model = ws.models.load(MODEL, 2)
    assert answer["predictions"] == model.predict(rows).tolist() and all(isinstance(p, int) for p in answer["predictions"])
    assert answer["classes"] == [0, 1]
    np.testing.assert_allclose(answer["probabilities"], model.predict_proba(rows), rtol=0, atol=1e-12)
    json.dumps(answer)   # plain JSON


def test_deployed_classifier_passes_its_smoke_test_and_parity_catches_a_probability_mismatch(bc):
    ws, _, _ = bc
    ws.releases.deploy(MODEL, 2, "staging", QA)
    [result] = [r for r in ws.releases.smoke_tests() if r.model_version == 2]
    assert result.passed, result.summary
    parity = [c for c in result.cases if c.name.startswith("held-out row")]
    assert len(parity) == 5 and all(c.detail == "label and probabilities match the offline ones" for c in parity)
    assert all(c.expected == c.got for c in parity)

    # the same cases against the endpoint, with its answers altered on the way back
    given = smoke.inputs(ws.models, ws.datasets, ws.policy, ws.models.get(MODEL, 2))
    deployment = ws.endpoints.get("staging").live.name

    class Altered:
        def __init__(self, change):
            self.change = change

        def invoke(self, env, payload, deployment=None):
            res = ws.releases.driver.invoke(env, payload, deployment=deployment)
            if isinstance(res.body, dict) and "probabilities" in res.body:
                self.change(res.body)
            return res

    def nudge(body):
        body["probabilities"][0][0] += 0.01

    def flip(body):
        body["predictions"][0] = 1 - body["predictions"][0]

    def drop(body):
        del body["probabilities"]

    tolerance = ws.policy.smoke.tolerance
    cases = smoke.run_cases(Altered(lambda body: None), "staging", deployment, given, tolerance)
    assert all(c.passed for c in cases), [c.detail for c in cases]
    cases = smoke.run_cases(Altered(nudge), "staging", deployment, given, tolerance)
    assert [c.passed for c in cases] == [False] * 5 + [True]
    assert "probability of class 0 differs from the offline one by 0.01" in cases[0].detail
    cases = smoke.run_cases(Altered(flip), "staging", deployment, given, tolerance)
    assert not any(c.passed for c in cases[:5]) and "differs from the offline label" in cases[0].detail
    cases = smoke.run_cases(Altered(drop), "staging", deployment, given, tolerance)
    assert not any(c.passed for c in cases[:5]) and "has no probabilities" in cases[0].detail


def test_the_review_charts_are_drawn_from_the_comparison(bc):
    from sklearn.metrics import confusion_matrix
    from ui.classification_view import calibration_figure, confusion_figure, precision_recall_figure, roc_figure
    ws, _, _ = bc
    c = ws.evaluation.compare(MODEL, 2)
    fig = confusion_figure(c)
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    assert [t.name for t in heatmaps] == ["candidate v2", "champion v1"]
    for trace, pred in zip(heatmaps, (c.candidate_pred, c.champion_pred)):
        np.testing.assert_array_equal(trace.z, confusion_matrix(c.actual, pred, labels=list(c.classes)))
    roc = roc_figure(c)
    assert [t.name for t in roc.data] == [f"candidate v2 (AUC {c.candidate_metrics['roc_auc']:.3f})",
                                          f"champion v1 (AUC {c.champion_metrics['roc_auc']:.3f})", "chance"]
    assert [t.name.split(" (")[0] for t in precision_recall_figure(c).data] == ["candidate v2", "champion v1"]
    calibration = calibration_figure(c)
    assert [t.name for t in calibration.data] == ["candidate v2", "champion v1", "perfectly calibrated"]
    assert sum(calibration.data[0].customdata) == len(c.actual)
    alone = confusion_figure(c, with_champion=False)
    assert [t.name for t in alone.data] == ["candidate v2"]


def test_the_models_page_reviews_a_classifier_with_its_metrics_and_charts(bc, monkeypatch):
    import streamlit as st
    from tests.pages.helpers import act, open_page
    from ui import models_view
    ws, _, _ = bc
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{ws.root}")
    st.cache_data.clear()
    at = open_page("pages/models.py", LEAD)
    at.selectbox(key=models_view.selected_key(MODEL)).set_value(2)
    at = act(at)
    expected = ws.evaluation.compare(MODEL, 2)
    tiles = {m.label.split(" ·")[0]: m.value for m in at.metric}
    assert {"f1", "roc_auc", "log_loss", "balanced_accuracy"} <= set(tiles)
    table = next(d.value for d in at.dataframe if "gate rule" in d.value.columns).set_index("metric")
    assert table.loc["f1", "candidate"] == pytest.approx(expected.candidate_metrics["f1"])
    assert table.loc["log_loss", "better when"] == "lower" and table.loc["roc_auc", "gate check"] == "pass"
    assert len(at.get("plotly_chart")) == 4   # confusion matrices, ROC, precision-recall, calibration
    assert not at.exception and not at.error
