"""The quality gate as a pure function: candidate vs champion metrics under the policy."""
from __future__ import annotations

import pytest

from services.entities import GateDecision
from services.gate import decide, relative_change
from services.policy import GateRule, Policy

DEFAULT = Policy()  # rmse: no regression; mae: 2 %; r2: 2 % and at least 0.3; rmse must improve
CHAMPION = {"rmse": 50.0, "mae": 40.0, "r2": 0.50}


@pytest.mark.parametrize("candidate, champion, direction, expected", [
    (45.0, 50.0, "lower", 0.10),     # lower is better: 10 % lower is 10 % better
    (55.0, 50.0, "lower", -0.10),
    (0.60, 0.50, "higher", 0.20),    # higher is better
    (0.40, 0.50, "higher", -0.20),
    (50.0, 50.0, "lower", 0.0),
    (-0.25, -0.50, "higher", 0.50),  # a negative champion (r2 < 0): relative to its size
    (-0.75, -0.50, "higher", -0.50),
])
def test_relative_change_is_positive_when_the_candidate_is_better(candidate, champion, direction, expected):
    assert relative_change(candidate, champion, direction) == pytest.approx(expected)


@pytest.mark.parametrize("candidate, direction, expected", [
    (0.0, "lower", 0.0), (0.0, "higher", 0.0),
    (-1.0, "lower", 1.0), (1.0, "lower", -1.0),
    (1.0, "higher", 1.0), (-1.0, "higher", -1.0),
])
def test_relative_change_against_a_zero_champion_has_the_right_sign(candidate, direction, expected):
    assert relative_change(candidate, 0.0, direction) == expected


def test_a_better_candidate_passes_every_rule():
    gate = decide({"rmse": 45.0, "mae": 38.0, "r2": 0.58}, CHAMPION, DEFAULT,
                  champion_ref="m:1", evaluated_on="d:2")
    assert gate.passed
    assert gate.reasons == ("better than champion m:1 on rmse",)
    assert (gate.champion, gate.evaluated_on) == ("m:1", "d:2")
    assert [(c.metric, c.passed) for c in gate.checks] == [("rmse", True), ("mae", True), ("r2", True)]
    rmse = gate.checks[0]
    assert (rmse.candidate, rmse.champion, rmse.direction) == (45.0, 50.0, "lower")
    assert "10.0% better" in rmse.reason


def test_a_regression_beyond_the_allowance_fails_naming_the_metric():
    gate = decide({"rmse": 49.0, "mae": 41.0, "r2": 0.51}, CHAMPION, DEFAULT)  # mae 2.5 % worse
    assert not gate.passed
    [reason] = gate.reasons
    assert reason.startswith("mae:") and "2.5% worse" in reason and "allowed 2.0%" in reason
    assert [c.metric for c in gate.checks if not c.passed] == ["mae"]


def test_a_regression_within_the_allowance_passes():
    gate = decide({"rmse": 49.0, "mae": 40.7, "r2": 0.495}, CHAMPION, DEFAULT)  # mae 1.75 %, r2 1 % worse
    assert gate.passed, gate.reasons


def test_require_improvement_refuses_a_tie():
    gate = decide(dict(CHAMPION), CHAMPION, DEFAULT)
    assert not gate.passed
    assert gate.reasons == ("rmse: must improve on the champion (50 vs 50)",)
    assert all(c.passed for c in gate.checks), "each rule alone allows a tie"


def test_without_require_improvement_a_tie_passes():
    policy = Policy(require_improvement=None)
    gate = decide(dict(CHAMPION), CHAMPION, policy, champion_ref="m:1")
    assert gate.passed and gate.reasons == ("every rule passed",)


def test_without_a_champion_only_the_absolute_rules_apply():
    gate = decide({"rmse": 80.0, "mae": 70.0, "r2": 0.31}, None, DEFAULT)
    assert gate.passed
    assert gate.champion is None
    assert "no champion yet" in gate.reasons[0]
    assert all(c.champion is None and "no champion" in c.reason for c in gate.checks)


def test_the_absolute_floor_fails_even_without_a_champion():
    gate = decide({"rmse": 80.0, "mae": 70.0, "r2": 0.25}, None, DEFAULT)
    assert not gate.passed
    assert gate.reasons == ("r2: 0.25 is below the floor 0.3",)


def test_the_absolute_floor_fails_even_when_better_than_the_champion():
    weak_champion = {"rmse": 90.0, "mae": 80.0, "r2": 0.10}
    gate = decide({"rmse": 85.0, "mae": 75.0, "r2": 0.20}, weak_champion, DEFAULT)
    assert not gate.passed and any("below the floor 0.3" in r for r in gate.reasons)


def test_a_ceiling():
    policy = Policy(gate_rules=(GateRule("rmse", "lower", max_regression=None, max=60.0),), require_improvement=None)
    assert decide({"rmse": 59.0}, None, policy).passed
    gate = decide({"rmse": 61.0}, None, policy)
    assert not gate.passed and "above the ceiling 60" in gate.reasons[0]


def test_no_max_regression_means_any_regression_is_allowed():
    policy = Policy(gate_rules=(GateRule("rmse", "lower", max_regression=None),), require_improvement=None)
    assert decide({"rmse": 500.0}, {"rmse": 50.0}, policy).passed


def test_a_missing_candidate_metric_fails():
    gate = decide({"rmse": 45.0, "r2": 0.6}, CHAMPION, DEFAULT)
    assert not gate.passed
    assert gate.reasons == ("mae: the candidate has no value",)


def test_a_champion_compared_with_itself_is_not_called_missing():
    gate = decide({"rmse": 50.0, "mae": 40.0, "r2": 0.5}, None, DEFAULT, champion_ref="m:1")
    assert gate.passed and gate.champion == "m:1"
    assert "champion m:1" in gate.reasons[0] and "no champion yet" not in gate.reasons[0]


def test_a_decision_survives_a_round_trip_through_json():
    gate = decide({"rmse": 49.0, "mae": 41.0, "r2": 0.51}, CHAMPION, DEFAULT, champion_ref="m:1", evaluated_on="d:2")
    assert GateDecision.from_dict(gate.to_dict()) == gate
