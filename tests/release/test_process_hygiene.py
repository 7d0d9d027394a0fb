"""Processes belong to one workspace folder, and none outlives its reason to run.

* ``down`` in a copy of a workspace folder (pid file included, as ``cp -r`` copies it) never
  stops the original's supervisor and endpoints;
* a supervisor whose workspace folder was deleted stops its endpoints and exits;
* a finished training run is reaped at once by the process that started it (the console),
  even if nobody asks about the run again.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

from services.entities import TrainingSpec
from services.local.processes import pid_alive
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR

from .conftest import live_workspace, wait_for_exit, workspace_processes


def process_state(pid: int) -> str | None:
    """The state letter in /proc (``Z``: exited, not reaped), None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0]
    except (OSError, IndexError):
        return None


def test_down_in_a_copied_workspace_folder_leaves_the_original_running(demo_template, tmp_path):
    with live_workspace(demo_template, tmp_path) as original:
        supervisor = original.endpoints.up(SYSTEM_ACTOR)
        original.endpoints.wait_gateways()
        gateways = [r["gateway_pid"] for r in original.db.query("SELECT gateway_pid FROM endpoints")]

        copy_root = tmp_path / "copy"
        shutil.copytree(original.root, copy_root)  # everything, the pid and lock files too
        copy = LocalWorkspace(copy_root)
        try:
            assert copy.endpoints.supervisor_pid() is None, "the copy's pid file names the original folder"
            assert copy.endpoints.down(SYSTEM_ACTOR) is False
        finally:
            copy.close()
        assert pid_alive(supervisor) and all(map(pid_alive, gateways))
        assert original.endpoints.supervisor_pid() == supervisor
        # what the pid file says: the process, the folder and the database's workspace id
        pid_file = json.loads((original.root / "supervisor.pid").read_text())
        assert pid_file["pid"] == supervisor and pid_file["workspace"] == str(original.root)
        assert len(pid_file["workspace_id"]) == 32


def test_a_supervisor_whose_workspace_folder_is_deleted_stops_its_endpoints_and_exits(demo_template, tmp_path):
    with live_workspace(demo_template, tmp_path) as ws:
        supervisor = ws.endpoints.up(SYSTEM_ACTOR)
        ws.endpoints.wait_gateways()
        assert len(workspace_processes(ws.root)) == 3  # the supervisor and a gateway per endpoint
        shutil.rmtree(ws.root)
        left = wait_for_exit(ws.root, 20)
        assert not left, f"still running for a deleted workspace: {left}"
        assert not pid_alive(supervisor)


def test_a_finished_training_run_leaves_no_defunct_process(demo_ws):
    run = demo_ws.jobs.submit(TrainingSpec(dataset="diabetes", estimator="ridge", params={"alpha": 1.0},
                                           register=False), "lead@contoso.com")
    pid = demo_ws.db.one("SELECT pid FROM runs WHERE id = ?", (run.id,))[0]
    assert demo_ws.jobs.wait(run.id, timeout_s=300).status.is_terminal
    # nobody asks about the run any more: its process must still be gone, not a zombie
    deadline = time.monotonic() + 10
    while process_state(pid) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert process_state(pid) is None, f"run process {pid} is {process_state(pid)!r} (Z: defunct)"
