"""`retrain --wait --timeout`: a wait that runs out says what still runs and exits 3, the run
going on (locally, and on the replayed Azure workspace, where a submitted job never ends)."""
from __future__ import annotations

import json
import time

import pytest

import tollgate
from cli.output import EXIT_TIMEOUT
from services.entities import RunStatus
from services.errors import InvalidInput
from services.local.workspace import LocalWorkspace
from services.policy import parse_policy

QA = "qa@contoso.com"
# a run that takes longer than its wait: the most trees of the deepest kind the bounds allow
SLOW = ("--estimator", "random_forest", "--param", "n_estimators=2000", "--param", "max_depth=64")


def test_a_local_run_still_going_exits_3_saying_what_runs_and_goes_on(demo_ws_path, capsys):
    started = time.monotonic()
    code = tollgate.main(["--workspace", f"local://{demo_ws_path}", "--as", QA, "--json", "retrain", *SLOW,
                          "--wait", "--timeout", "1"])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == EXIT_TIMEOUT == 3
    run = json.loads(out)            # --json: the run as it stands, for the pipeline's log
    assert run["status"] in ("queued", "running")
    assert f"timeout: {run['id']} is still {run['status']} (step: " in err and "it was not canceled" in err
    assert f"tollgate.py log {run['id']}" in err and f"tollgate.py cancel {run['id']}" in err
    assert took < 30, f"the wait gave up after {took:.1f} s"
    ws = LocalWorkspace(demo_ws_path)
    try:
        assert ws.jobs.get(run["id"]).status != RunStatus.CANCELED, "a wait that gives up does not cancel"
        ws.jobs.cancel(run["id"], QA)
    finally:
        ws.close()


def test_a_job_on_the_replayed_azure_workspace_never_ends_and_the_wait_gives_up(capsys):
    started = time.monotonic()
    code = tollgate.main(["--workspace", "azure+replay://", "--as", QA, "retrain", "--wait", "--timeout", "2"])
    took = time.monotonic() - started
    out, err = capsys.readouterr()
    assert code == EXIT_TIMEOUT, err
    run_id = out.split()[1].rstrip(";")
    assert f"timeout: {run_id} is still " in err and "after 2 s; it was not canceled" in err
    assert took < 60, f"{took:.1f} s (it waited forever before --timeout)"


def test_a_timeout_without_a_wait_is_refused(demo_ws_path, capsys):
    assert tollgate.main(["--workspace", f"local://{demo_ws_path}", "--as", QA, "retrain", "--timeout", "5"]) == 2
    assert "--timeout bounds a wait: it needs --wait" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [("0", "out of range"), ("nan", "out of range"),
                                            ("soon", "not a number of seconds")])
def test_a_timeout_that_is_not_a_duration_is_a_usage_error(capsys, value, message):
    with pytest.raises(SystemExit) as ended:
        tollgate.main(["retrain", "--wait", "--timeout", value])
    assert ended.value.code == 2 and message in capsys.readouterr().err


def test_the_default_wait_comes_from_the_policy():
    assert parse_policy("").training.wait_timeout_s == 3600
    assert parse_policy("[training]\nwait_timeout_s = 90").training.wait_timeout_s == 90
    for bad in ("0", "-5", "nan", "inf", '"long"', "1e9"):
        with pytest.raises(InvalidInput, match="training.wait_timeout_s"):
            parse_policy(f"[training]\nwait_timeout_s = {bad}")
