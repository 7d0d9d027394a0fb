"""Every CLI input checked: a bad value is exit 2 with a message naming it on stderr, never a
traceback, and nothing changes. In-process (``tollgate.main``), the same parsing and error handling
as ``python tollgate.py``; one demo copy for the module."""
from __future__ import annotations

import shlex

import pytest

import tollgate

BIG = "99999999999999999999"
BAD = [  # (command, what stderr must say)
    (f"gate --model diabetes-regressor --version {BIG}", "out of range"),
    ("gate --model diabetes-regressor --version abc", "must be a whole number, got 'abc'"),
    (f"audit --limit {BIG}", "out of range"), ("audit --limit 1e23", "not a whole number"),
    ("audit --limit -5", "out of range"),
    (f"deploy --model diabetes-regressor --version {BIG} --env staging --dry-run", "out of range"),
    (f"approve --model diabetes-regressor --version {BIG} --comment c", "out of range"),
    (f"datasets diabetes:{BIG}", "out of range"), ("datasets diabetes:abc", "must be a whole number, got 'abc'"),
    (f"retrain --dataset diabetes:{BIG}", "out of range"),
    (f"schedule enable {BIG}", "out of range"), ("schedule add --dataset diabetes --cron 'bad cron'", "cron"),
    (f"telemetry --env production --since {BIG}d", "too long"), ("telemetry --env production --since soon", "soon"),
    ("logs --env production --since soon", "soon"), ("logs --env production --tail -1", "out of range"),
    ("endpoint --env nowhere", "nowhere"), ("canary status --env nowhere", "endpoint 'nowhere' does not exist"),
    ("canary pause --env nowhere --comment c", "endpoint 'nowhere' does not exist"),
    ("traffic --env production blue=abc --dry-run", "blue=abc"),
    ("register-dataset x /nonexistent.csv", "nonexistent.csv"),
    ("retrain --estimator gbr --param n_estimators=1000000000", "out of bounds"),
    ("retrain --estimator random_forest --param max_depth=100000", "out of bounds"),
    ("retrain --param alpha=nan", "not a finite number"), ("retrain --param alpha=inf", "not a finite number"),
    ("runs --metric 'rmse<<'", "rmse <"), (f"runs --offset {BIG}", "out of range"),
]


@pytest.fixture(scope="module")
def workspace(demo_ws_path):
    return f"local://{demo_ws_path}"


def run_cli(workspace: str, command: str, capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = tollgate.main(["--workspace", workspace, "--as", "admin@contoso.com", *shlex.split(command)])
    except SystemExit as e:   # argparse: a usage error
        code = e.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command, says", BAD, ids=[c for c, _ in BAD])
def test_a_bad_value_is_exit_2_with_a_message(workspace, demo_ws, command, says, capsys):
    runs, audit = len(demo_ws.jobs.list()), len(demo_ws.audit.audit())
    code, err = run_cli(workspace, command, capsys)
    assert code == 2, err
    assert says in err and "Traceback" not in err, err
    assert len(demo_ws.jobs.list()) == runs and len(demo_ws.audit.audit()) == audit   # nothing changed
