"""The whole chain on an empty workspace: data → run → metrics → registered model →
lineage → gate, with real job processes."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import compute
from pipeline.train import split
from services.demo import diabetes_v1, diabetes_v2
from services.entities import CheckStatus, RunStatus, TrainingSpec

LEAD = "lead@contoso.com"  # [roles] of tollgate.toml: training and registering data need ml_lead


def train(ws, dataset_version: int, estimator: str, params: dict):
    run = ws.jobs.submit(TrainingSpec(dataset="diabetes", dataset_version=dataset_version, estimator=estimator,
                                      params=params, experiment="e2e"), LEAD)
    run = ws.jobs.wait(run.id, timeout_s=240)
    assert run.status == RunStatus.COMPLETED, f"{run.error}\n{ws.jobs.log(run.id)}"
    return run


def test_from_data_to_a_gated_champion_and_a_challenger(empty_ws, tmp_path):
    ws, policy = empty_ws, empty_ws.policy

    # data
    path = tmp_path / "diabetes.csv"
    diabetes_v1().to_csv(path, index=False)
    dv = ws.datasets.register("diabetes", path, actor=LEAD)
    assert (dv.ref, dv.rows, dv.tests_status) == ("diabetes:1", 442, CheckStatus.PASS)

    # the first run: metrics, curve, log
    first = train(ws, 1, "ridge", {"alpha": 0.5})
    assert {"rmse", "mae", "r2"} <= set(first.metrics)
    assert len(ws.jobs.metric_history(first.id, "cv_rmse")) == 5
    assert "registered diabetes-regressor:1 as champion" in ws.jobs.log(first.id)

    # with no champion, the first model that passes the absolute rules is registered and becomes it
    assert first.gate.passed and first.gate.champion is None and "no champion yet" in first.gate.reasons[0]
    assert (first.model_name, first.model_version) == (policy.model_name, 1)
    champion = ws.models.champion(policy.model_name)
    assert champion.version == 1
    assert (champion.run_id, champion.dataset, champion.dataset_version) == (first.id, "diabetes", 1)
    assert champion.created_by == LEAD, "the runner registers the model as the run's submitter"

    # the registered file is the model the run evaluated: same predictions, same metrics
    model = ws.models.load(policy.model_name, 1)
    _, X_test, _, y_test = split(ws.datasets.load("diabetes", 1), policy.target, policy.test_fraction,
                                 policy.split_seed)
    pred = model.predict(X_test)
    assert pred.shape == (len(X_test),) and np.isfinite(pred).all()
    for key, value in compute("regression", y_test, pred).items():
        assert first.metrics[key] == pytest.approx(value), key

    # new data, a challenger: gated against the champion on the new data's held-out rows
    path2 = tmp_path / "diabetes-v2.csv"
    diabetes_v2().to_csv(path2, index=False)
    dv2 = ws.datasets.register("diabetes", path2, actor=LEAD)
    assert dv2.baseline_version == 1 and dv2.tests_status != CheckStatus.FAIL

    second = train(ws, 2, "gbr", {"n_estimators": 120})
    gate = second.gate
    assert gate.champion == f"{policy.model_name}:1" and gate.evaluated_on == "diabetes:2"
    assert {c.metric for c in gate.checks} == {r.metric for r in policy.gate_rules}
    assert all(c.champion is not None for c in gate.checks)
    assert gate.passed, gate.reasons  # gradient boosting on more data beats a ridge on less
    assert second.model_version == 2
    registered = ws.models.get(policy.model_name, 2)
    assert (registered.run_id, registered.dataset_version, registered.is_champion) == (second.id, 2, False)

    # the evaluator, asked later, reaches the same decision from the same rows
    later = ws.evaluation.compare(policy.model_name, 2)
    assert later.gate.passed and later.champion.version == 1
    assert len(later.actual) == len(split(ws.datasets.load("diabetes", 2), policy.target,
                                          policy.test_fraction, policy.split_seed)[3])
    for now, then in zip(later.gate.checks, gate.checks, strict=True):
        assert (now.metric, now.passed) == (then.metric, then.passed)
        assert now.candidate == pytest.approx(then.candidate) and now.champion == pytest.approx(then.champion)
    assert ws.models.champion(policy.model_name).version == 1, "a candidate never replaces the champion by itself"
