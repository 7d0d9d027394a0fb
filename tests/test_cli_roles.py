"""Every CLI command that changes something, as ``support`` and as an identity with no role (no
``--as`` at all: the CLI's own ``cli-user``): exit 2, the refusal with the role needed on stderr,
no traceback, and nothing changed. ``tollgate.main`` runs in this process (the same argument
parsing and error handling as ``python tollgate.py``; a subprocess per case would cost ~5 s each).

Release commands go through the release workflow, as the console's buttons do.
"""
from __future__ import annotations

import pytest

import tollgate
from services.entities import RunStatus
from services.permissions import roles_needed
from tests.contract.helpers import LEAD, SUPPORT, diabetes, snapshot, stop_endpoints, write_csv

MODEL = "diabetes-regressor"
NO_ROLE = None  # no --as: the CLI acts as "cli-user", who has no role


@pytest.fixture(scope="module")
def world(demo_ws, tmp_path_factory):
    schedule = demo_ws.schedules.add("diabetes", "0 3 * * *", LEAD, estimator="ridge")
    run = next(r for r in demo_ws.jobs.list() if r.status == RunStatus.COMPLETED)
    csv = write_csv(tmp_path_factory.mktemp("cli-roles"), diabetes().head(80), "more.csv")
    return {"schedule": str(schedule.id), "run": run.id, "csv": str(csv)}


COMMANDS = [  # (the action of services.permissions, the command line after the global options)
    ("register_dataset", lambda w: ["register-dataset", "diabetes", w["csv"]]),
    ("submit_run", lambda w: ["retrain", "--dataset", "diabetes:2"]),
    ("cancel_run", lambda w: ["cancel", w["run"]]),
    ("edit_schedules", lambda w: ["schedule", "add", "--dataset", "diabetes", "--cron", "0 4 * * *"]),
    ("edit_schedules", lambda w: ["schedule", "disable", w["schedule"]]),
    ("edit_schedules", lambda w: ["schedule", "remove", w["schedule"]]),
    ("edit_schedules", lambda w: ["trigger", "on", "--dataset", "diabetes"]),
    ("invoke_production", lambda w: ["simulate", "--env", "production", "--rps", "5", "--duration", "1"]),
    ("invoke_staging", lambda w: ["simulate", "--env", "staging", "--rps", "5", "--duration", "1"]),
]
RELEASE_COMMANDS = [
    ("deploy", lambda w: ["deploy", "--model", MODEL, "--version", "2"]),
    ("smoke_test", lambda w: ["smoke-test", "--env", "staging"]),
    ("approve", lambda w: ["approve", "--model", MODEL, "--version", "2", "--comment", "fine"]),
    ("reject", lambda w: ["reject", "--model", MODEL, "--version", "2", "--comment", "not fine"]),
    ("promote", lambda w: ["promote", "--model", MODEL, "--version", "2"]),
    ("rollback", lambda w: ["rollback", "--comment", "bad"]),
    ("show_keys", lambda w: ["endpoint", "--env", "production", "--show-keys"]),
    ("promote", lambda w: ["canary", "start", "--model", MODEL, "--version", "2"]),
    ("promote", lambda w: ["canary", "pause"]),
    ("promote", lambda w: ["canary", "resume"]),
    ("rollback", lambda w: ["canary", "abort"]),
    pytest.param("operate_endpoints", lambda w: ["up"], id="up"),
    pytest.param("operate_endpoints", lambda w: ["down"], id="down"),
]


def ids(cases) -> list[str]:
    return [c.id if hasattr(c, "id") else " ".join(c[1]({"csv": "FILE", "run": "RUN", "schedule": "ID"})[:2])
            for c in cases]


def refused(ws, world, who, action, command, monkeypatch, capsys) -> None:
    monkeypatch.delenv("TOLLGATE_AS", raising=False)
    before = snapshot(ws)
    argv = ["--workspace", ws.info.uri, *(["--as", who] if who else []), *command(world)]
    try:
        code = tollgate.main(argv)
    finally:
        if ws.endpoints.supervisor_pid():  # a wrongly allowed `up` started the endpoints: stop them
            stop_endpoints(ws)
    err = capsys.readouterr().err
    assert code == 2, err
    assert f"error: {who or 'cli-user'} (" in err and f"that needs {roles_needed(action)}" in err, err
    assert "Traceback" not in err
    assert snapshot(ws) == before, f"refused `{' '.join(command(world))}` changed something"


@pytest.mark.parametrize("who", [SUPPORT, NO_ROLE])
@pytest.mark.parametrize("action, command", COMMANDS, ids=ids(COMMANDS))
def test_every_write_command_is_refused_without_the_role(demo_ws, world, who, action, command, monkeypatch, capsys):
    refused(demo_ws, world, who, action, command, monkeypatch, capsys)


@pytest.mark.parametrize("who", [SUPPORT, NO_ROLE])
@pytest.mark.parametrize("action, command", RELEASE_COMMANDS, ids=ids(RELEASE_COMMANDS))
def test_every_release_command_is_refused_without_the_role(demo_ws, world, who, action, command, monkeypatch,
                                                           capsys):
    refused(demo_ws, world, who, action, command, monkeypatch, capsys)


def test_the_system_identity_cannot_be_claimed_in_any_spelling(demo_ws, world, monkeypatch, capsys):
    monkeypatch.delenv("TOLLGATE_AS", raising=False)
    before = snapshot(demo_ws)
    code = tollgate.main(["--workspace", demo_ws.info.uri, "--as", " Tollgate-System ", "cancel", world["run"]])
    assert code == 2 and "reserved for Tollgate itself" in capsys.readouterr().err
    assert snapshot(demo_ws) == before
