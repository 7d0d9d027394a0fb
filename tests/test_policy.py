"""The policy file: release rules as data, and refusing a file that says something else."""
from __future__ import annotations

from pathlib import Path

import pytest

from services.errors import InvalidInput
from services.policy import DataTestPolicy, GateRule, Policy, load_policy, parse_policy

ROOT = Path(__file__).resolve().parent.parent


def test_the_projects_policy_file_parses_to_the_built_in_rules():
    policy = parse_policy((ROOT / "tollgate.toml").read_text(), source="tollgate.toml")
    defaults = Policy()
    assert policy.gate_rules == defaults.gate_rules
    assert policy.data_tests == defaults.data_tests
    assert (policy.model_name, policy.target, policy.test_fraction, policy.split_seed) == \
        ("diabetes-regressor", "target", 0.2, 42)
    assert policy.require_improvement == "rmse" and policy.max_concurrent_jobs == 2
    assert policy.source == "tollgate.toml"


def test_a_file_sets_what_it_names_and_defaults_fill_the_rest():
    policy = parse_policy("""
        [project]
        model_name = "churn"
        target = "churned"
        [evaluation]
        test_fraction = 0.25
        split_seed = 7
        [gate]
        require_improvement = "r2"
        [[gate.rules]]
        metric = "r2"
        direction = "higher"
        max_regression = 0.01
        min = 0.5
        [data_tests]
        psi_fail = 0.4
        [jobs]
        max_concurrent = 4
    """)
    assert (policy.model_name, policy.target, policy.experiment) == ("churn", "churned", Policy().experiment)
    assert (policy.test_fraction, policy.split_seed) == (0.25, 7)
    assert policy.gate_rules == (GateRule("r2", "higher", 0.01, min=0.5),)
    assert policy.require_improvement == "r2"
    assert policy.data_tests == DataTestPolicy(psi_fail=0.4)
    assert policy.max_concurrent_jobs == 4


def test_an_empty_file_is_the_defaults():
    policy = parse_policy("")
    assert policy.gate_rules == Policy().gate_rules and policy.data_tests == Policy().data_tests


def test_require_improvement_can_be_switched_off():
    assert parse_policy('[gate]\nrequire_improvement = ""\n').require_improvement is None


def test_a_rules_direction_is_its_metrics():
    policy = parse_policy('[[gate.rules]]\nmetric = "r2"\n[[gate.rules]]\nmetric = "mae"\ndirection = "lower"\n')
    assert [(r.metric, r.direction) for r in policy.gate_rules] == [("r2", "higher"), ("mae", "lower")]
    assert policy.direction("r2") == "higher" and policy.direction("train_r2") == "higher"
    assert policy.direction("f1") == "higher" and policy.direction("log_loss") == "lower"
    assert policy.direction("mape") == "lower"   # a metric Tollgate does not know: lower, as a loss


def test_the_task_is_regression_unless_the_file_says_otherwise():
    assert Policy().task == parse_policy("").task == load_policy().task == "regression"
    binary = parse_policy('[project]\ntask = "binary"\n')
    assert binary.task == "binary" and binary.require_improvement == "f1"
    assert [r.metric for r in binary.gate_rules] == ["f1", "accuracy", "balanced_accuracy"]
    assert all(r.direction == "higher" for r in binary.gate_rules)


@pytest.mark.parametrize("text, mentions", [
    ('[project]\ntask = "classification"\n', "[project] task"),
    ('[project]\ntask = "binary"\n[[gate.rules]]\nmetric = "f1"\n[[gate.rules]]\nmetric = "rmse"\n',
     "[[gate.rules]] #2 metric = 'rmse' is not a metric of the task 'binary'"),
    ('[project]\ntask = "multiclass"\n[gate]\nrequire_improvement = "r2"\n',
     "[gate] require_improvement = 'r2' is not a metric of the task 'multiclass'"),
    ('[[gate.rules]]\nmetric = "f1"\n', "[[gate.rules]] #1 metric = 'f1' is not a metric of the task 'regression'"),
    ('[[gate.rules]]\nmetric = "latency"\n', "'latency' is not a metric"),
    ('[project]\ntask = "binary"\n[[gate.rules]]\nmetric = "log_loss"\ndirection = "higher"\n',
     "for log_loss lower is better"),
    ('[project]\ntask = "binary"\n[[gate.rules]]\nmetric = "f1"\nmin = "high"\n', "min"),
])
def test_a_gate_rule_the_task_cannot_have_is_refused_naming_file_and_key(text, mentions):
    with pytest.raises(InvalidInput) as err:
        parse_policy(text, source="ws/tollgate.toml")
    assert str(err.value).startswith("ws/tollgate.toml: ") and mentions in str(err.value)


@pytest.mark.parametrize("text, mentions", [
    ("[gate\nrules = 1", "TOML"),
    ('[[gate.rules]]\nmetric = "rmse"\ndirection = "down"\n', "direction"),
    ('[[gate.rules]]\nmetric = "rmse"\nmax_regresion = 0.1\n', "max_regresion"),
    ('[[gate.rules]]\ndirection = "lower"\n', "metric"),
    ("[data_tests]\npsi_fial = 0.3\n", "psi_fial"),
    ("[evaluation]\ntest_fraction = 0.9\n", "test_fraction"),
    ("[evaluation]\ntest_fraction = 0.01\n", "test_fraction"),
    ('[evaluation]\ntest_fraction = "a fifth"\n', "test_fraction"),
    ('[evaluation]\nsplit_seed = "forty-two"\n', "split_seed"),
    ("[evaluation]\ntest_fractoin = 0.3\n", "test_fractoin"),
    ('[gate]\nrequire_improvment = "rmse"\n', "require_improvment"),
    ('[project]\nmodel = "x"\n', "model"),
    ("[jobs]\nmax_concurrent = 0\n", "max_concurrent"),
    ('[jobs]\nmax_concurrent = "two"\n', "max_concurrent"),
    ("[gaet]\nrules = []\n", "gaet"),
])
def test_a_malformed_policy_is_refused_with_the_culprit_named(text, mentions):
    with pytest.raises(InvalidInput) as err:
        parse_policy(text, source="ws/tollgate.toml")
    assert "ws/tollgate.toml" in str(err.value)
    assert mentions in str(err.value)


def test_load_policy_prefers_the_workspace_folder(tmp_path):
    (tmp_path / "tollgate.toml").write_text("[jobs]\nmax_concurrent = 1\n")
    policy = load_policy(tmp_path)
    assert policy.max_concurrent_jobs == 1 and policy.source == str(tmp_path / "tollgate.toml")


def test_load_policy_falls_back_to_the_projects_file(tmp_path):
    assert load_policy(tmp_path / "elsewhere").source == str(ROOT / "tollgate.toml")


def test_telemetry_retention_and_capture_are_read_from_the_file():
    policy = parse_policy("[telemetry]\nraw_days = 3\nminute_days = 14\ncapture_fraction = 0.5\n"
                          "[telemetry.capture]\nproduction = 0.1\n")
    t = policy.telemetry
    assert (t.raw_days, t.minute_days, t.hour_days) == (3, 14, 365)
    assert (t.capture_for("production"), t.capture_for("staging")) == (0.1, 0.5)
    assert Policy().telemetry.capture_for("production") == 1.0
    assert load_policy().telemetry == Policy().telemetry  # the project's file says the defaults


@pytest.mark.parametrize("text, mentions", [
    ("[telemetry]\nraw_dayz = 3\n", "raw_dayz"),
    ("[telemetry]\nraw_days = 40\n", "raw_days <= minute_days"),
    ("[telemetry]\nraw_days = 0.5\n", "1 <= raw_days"),
    ("[telemetry]\ncapture_fraction = 1.5\n", "capture_fraction"),
    ("[telemetry.capture]\nproduction = -0.1\n", "capture.production"),
    ("[telemetry]\ncapture = 0.3\n", "[telemetry.capture]"),
    ("[telemetry]\nhour_days = 'forever'\n", "hour_days"),
])
def test_a_malformed_telemetry_table_is_refused(text, mentions):
    with pytest.raises(InvalidInput) as e:
        parse_policy(text)
    assert mentions in str(e.value)
