"""``tollgate.py canary …`` and ``notifications`` on a rollout arranged in the database (no processes)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

import tollgate
from services.local.workspace import LocalWorkspace
from tests.conftest import copy_workspace

from .arrange import MODEL, arrange_rollout

QA, SUPPORT = "qa@contoso.com", "support@contoso.com"


@pytest.fixture
def ws_uri(demo_template, tmp_path):
    root = copy_workspace(demo_template, tmp_path / "ws")
    ws = LocalWorkspace(root)
    arrange_rollout(ws, datetime.now(timezone.utc) - timedelta(seconds=30))
    ws.close()
    return f"local://{root}"


def run(capsys, uri: str, *argv: str) -> tuple[int, str, str]:
    code = tollgate.main(["--workspace", uri, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_pause_abort_and_their_exit_codes(ws_uri, capsys):
    code, out, _ = run(capsys, ws_uri, "canary", "status")
    assert code == 0 and out.startswith(f"canary of {MODEL}:3 on production: running, step 1 of 3 (10 %)")
    assert "verdict so far: wait (the canary served 0 of the 50 requests needed to judge it)" in out

    code, _, err = run(capsys, ws_uri, "--as", SUPPORT, "canary", "pause")
    assert code == 2 and "support@contoso.com (support) may not" in err

    code, out, _ = run(capsys, ws_uri, "--as", QA, "canary", "pause", "--comment", "looking")
    assert code == 0 and "paused by qa@contoso.com: looking" in out

    code, _, err = run(capsys, ws_uri, "--as", QA, "canary", "abort")
    assert code == 2 and "a rollback needs a comment saying why" in err

    code, out, _ = run(capsys, ws_uri, "--as", QA, "canary", "abort", "--comment", "p95 too high", "--json")
    data = json.loads(out)
    assert code == 0 and data["state"] == "aborted" and data["traffic"] == 0 and data["model"] == f"{MODEL}:3"

    code, out, _ = run(capsys, ws_uri, "canary", "status", "--json")
    assert code == 1, "a pipeline step on 'canary status' fails once the canary was rolled back or aborted"
    assert json.loads(out)["reason"] == "aborted by qa@contoso.com: p95 too high"

    code, out, _ = run(capsys, ws_uri, "notifications", "--json")
    events = [e["event"] for e in json.loads(out)["events"]]
    assert code == 0 and events == ["canary_aborted", "canary_paused"]


def test_start_refuses_a_version_that_is_not_approved(ws_uri, capsys):
    code, _, err = run(capsys, ws_uri, "--as", QA, "canary", "start", "--model", MODEL, "--version", "2")
    assert code == 2 and "already running on production" in err
    run(capsys, ws_uri, "--as", QA, "canary", "abort", "--comment", "wrong version")
    code, _, err = run(capsys, ws_uri, "--as", QA, "canary", "start", "--model", MODEL, "--version", "2")
    assert code == 2 and "only an approved version can be promoted" in err
