"""A local deployment whose process exits while it starts says why: the supervisor records the last
error its console log shows (here the inference server's ``UserScriptException`` around what
``score.py``'s ``init()`` raised on a model file that is not a pickle), shown by the Endpoints page
and ``tollgate.py endpoint`` as the deployment's last error."""
from __future__ import annotations

import pytest

from services.failure import last_error_line
from services.local.db import utcnow
from services.local.paths import console_log_path
from services.local.processes import pid_alive, stop_process
from services.local.supervisor import Supervisor
from services.local.workspace import LocalWorkspace
from tests.conftest import copy_workspace

from .conftest import MODEL, wait_for


@pytest.fixture
def broken(demo_template, tmp_path):
    root = copy_workspace(demo_template, tmp_path / "ws")
    ws = LocalWorkspace(root)
    ws.endpoints.ensure_endpoints()
    model_dir = root / ws.db.one("SELECT path FROM models WHERE name = ? AND version = 1", (MODEL,))["path"]
    (model_dir / "model.pkl").write_bytes(b"not a pickle")
    with ws.db.write() as c:
        c.execute("INSERT INTO deployments (endpoint, name, model_name, model_version, traffic, created_at, created_by)"
                  " VALUES ('staging', 'blue', ?, 1, 100, ?, 'qa@contoso.com')", (MODEL, utcnow()))
    yield ws
    pid = ws.db.one("SELECT pid FROM deployments WHERE name = 'blue'")["pid"]
    if pid and pid_alive(pid):
        stop_process(pid)
    ws.close()


def test_a_deployment_that_exits_while_starting_says_why(broken):
    ws = broken
    supervisor = Supervisor(ws.root)
    supervisor.ensure_deployments()                     # starts it: the real inference server
    first = ws.db.one("SELECT pid FROM deployments WHERE name = 'blue'")["pid"]
    wait_for(lambda: not pid_alive(first), 120, "the inference server to give up on the broken model")
    supervisor.ensure_deployments()                     # notices, records why, starts it again
    blue = ws.endpoints.get("staging").deployments[0]
    log = console_log_path(ws.root, "staging", "blue").read_text()
    why = last_error_line(log)
    assert why.startswith("UserScriptException: Caught an unhandled exception from the user script; caused by ")
    assert blue.last_error.startswith(f"process {first} exited unexpectedly at ")
    assert blue.last_error.endswith(f"(was starting): {why}; restarted")
    assert blue.restarts == 1


@pytest.mark.parametrize("log, why", [
    ("Traceback (most recent call last):\n  File \"score.py\", line 1\nModuleNotFoundError: No module named 'x'\n"
     "worker exiting", "ModuleNotFoundError: No module named 'x'"),
    ("2026-01-01 10:00:00 ERROR could not bind port 5001\nshutting down", "2026-01-01 10:00:00 ERROR could not bind port 5001"),
    ("ValueError: first\n\nDuring handling of the above exception, another exception occurred:\n\n"
     "Traceback (most recent call last):\nmypkg.errors.LoadError: second", "LoadError: second; caused by ValueError: first"),
    ("all good\nserving", None),
    ("", None),
])
def test_the_reason_is_the_last_error_a_log_shows(log, why):
    assert last_error_line(log) == why


def test_a_long_reason_is_cut():
    assert len(last_error_line("RuntimeError: " + "x" * 1000)) == 300
