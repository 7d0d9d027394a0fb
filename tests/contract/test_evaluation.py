"""Evaluator: candidate and champion scored on the same held-out rows; the quality gate."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import compute
from pipeline.train import split
from services.errors import NotFound
from services.policy import GateRule, Policy

MODEL = "diabetes-regressor"


def demo_version(ws, estimator: str, dataset_version: int) -> int:
    """The demo trains its candidates in parallel, so their version numbers vary; find one by what it is."""
    [m] = [m for m in ws.models.versions(MODEL) if m.estimator == estimator
           and m.dataset_version == dataset_version and not m.is_champion]
    return m.version


@pytest.fixture(scope="module")
def gbr(demo) -> int:
    """The demo's gradient boosting on diabetes:2: clearly better than the champion (ridge, diabetes:1)."""
    return demo_version(demo, "gbr", 2)


def held_out_target(ws, dataset: str, version: int) -> np.ndarray:
    frame = ws.datasets.load(dataset, version)
    _, _, _, y_test = split(frame, ws.policy.target, ws.policy.test_fraction, ws.policy.split_seed)
    return y_test.to_numpy(dtype=float)


def test_candidate_and_champion_are_scored_on_the_same_held_out_rows(demo, gbr):
    c = demo.evaluation.compare(MODEL, gbr)
    assert c.candidate.ref == f"{MODEL}:{gbr}" and c.champion.ref == f"{MODEL}:1"
    assert c.evaluated_on.startswith("diabetes:2")

    actual = held_out_target(demo, "diabetes", 2)
    assert len(actual) == 133  # 20 % of diabetes:2's 662 rows
    np.testing.assert_allclose(c.actual, actual)
    assert len(c.candidate_pred) == len(c.champion_pred) == len(actual)
    assert not np.allclose(c.candidate_pred, c.champion_pred), "two different models"

    assert c.candidate_metrics == pytest.approx(compute("regression", c.actual, c.candidate_pred))
    assert c.champion_metrics == pytest.approx(compute("regression", c.actual, c.champion_pred))
    assert set(c.candidate_metrics) >= {"rmse", "mae", "r2"}


def test_predictions_are_the_registered_models_own(demo, gbr):
    c = demo.evaluation.compare(MODEL, gbr)
    frame = demo.datasets.load("diabetes", 2)
    _, X_test, _, _ = split(frame, demo.policy.target, demo.policy.test_fraction, demo.policy.split_seed)
    np.testing.assert_allclose(c.candidate_pred, demo.models.load(MODEL, gbr).predict(X_test))
    np.testing.assert_allclose(c.champion_pred, demo.models.load(MODEL, 1).predict(X_test))


def test_the_evaluation_split_is_the_candidates_dataset(demo):
    c = demo.evaluation.compare(MODEL, demo_version(demo, "ridge", 1))
    assert c.evaluated_on.startswith("diabetes:1")
    assert len(c.actual) == len(held_out_target(demo, "diabetes", 1)) == 89


def test_a_better_candidate_passes_the_gate(demo, gbr):
    c = demo.evaluation.compare(MODEL, gbr)
    assert c.candidate_metrics["rmse"] < c.champion_metrics["rmse"]
    gate = c.gate
    assert gate.passed, gate.reasons
    assert gate.champion == f"{MODEL}:1" and gate.evaluated_on.startswith("diabetes:2")
    assert {check.metric for check in gate.checks} == {r.metric for r in demo.policy.gate_rules}
    assert all(check.passed for check in gate.checks)
    assert demo.evaluation.gate(MODEL, gbr) == gate


def test_a_worse_candidate_fails_with_reasons(demo, gbr):
    c = demo.evaluation.compare(MODEL, 1, champion_version=gbr)  # the old champion against a better one
    assert c.champion.version == gbr
    assert not c.gate.passed
    assert c.gate.reasons and any("rmse" in r for r in c.gate.reasons)
    rmse = next(check for check in c.gate.checks if check.metric == "rmse")
    assert not rmse.passed and rmse.candidate > rmse.champion


def test_the_policy_decides(backend, demo, gbr):
    strict = Policy(gate_rules=(GateRule("r2", "higher", max_regression=None, min=0.95),),
                    require_improvement=None)
    c = backend.with_policy(demo, strict).evaluation.compare(MODEL, gbr)
    assert not c.gate.passed
    assert len(c.gate.reasons) == 1 and "r2" in c.gate.reasons[0] and "0.95" in c.gate.reasons[0]

    lenient = Policy(gate_rules=(GateRule("rmse", "lower", max_regression=0.5),), require_improvement=None)
    c = backend.with_policy(demo, lenient).evaluation.compare(MODEL, 1, champion_version=gbr)
    assert c.gate.passed, "50 % worse is allowed by this policy"


def test_the_champion_against_itself(demo):
    c = demo.evaluation.compare(MODEL, 1)
    assert c.candidate.ref == c.champion.ref == f"{MODEL}:1"
    np.testing.assert_allclose(c.candidate_pred, c.champion_pred)
    assert c.candidate_metrics == pytest.approx(c.champion_metrics)
    assert c.gate.passed, c.gate.reasons
    assert not any("no champion" in r for r in c.gate.reasons), "there is a champion: this very version"


def test_unknown_model_or_version_is_not_found(demo):
    with pytest.raises(NotFound):
        demo.evaluation.compare("nope", 1)
    with pytest.raises(NotFound):
        demo.evaluation.compare(MODEL, 99)
    with pytest.raises(NotFound):
        demo.evaluation.compare(MODEL, 1, champion_version=99)
    with pytest.raises(NotFound):
        demo.evaluation.gate(MODEL, 99)
