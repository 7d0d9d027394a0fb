"""The release workflow from the command line, as a pipeline or a person at a terminal runs it.

The issue's "done when", step by step: deploy a new version to staging → the smoke
test passes → approve as the deployer is refused, as an ML lead succeeds → promote
as QA → production answers with the new version → rollback → production answers
with the previous one; the audit trail shows each step with its actor; keys are
masked unless QA asks for them.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from services.permissions import SYSTEM_ACTOR
from tests.conftest import ROOT
from tests.release.conftest import FEATURES_ROW, LEAD, LEE, MODEL, QA, SUPPORT, live_workspace

PAYLOAD = json.dumps({"data": [FEATURES_ROW]})


@pytest.fixture(scope="module")
def ws(demo_template, tmp_path_factory):
    """v1 serving production (as the demo seeding leaves it; the CLI cannot deploy to production)."""
    with live_workspace(demo_template, tmp_path_factory.mktemp("cli-release")) as ws:
        ws.releases.deploy(MODEL, 1, "production", SYSTEM_ACTOR)
        yield ws


def tollgate(ws, *args: str, actor: str | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(ROOT / "tollgate.py"), *args, "--workspace", f"local://{ws.root}"]
    if actor:
        cmd += ["--as", actor]
    env = {k: v for k, v in os.environ.items() if k not in ("TOLLGATE_AS", "TOLLGATE_WORKSPACE")}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def production_answers_with(ws) -> str:
    shown = json.loads(ok(tollgate(ws, "endpoint", "--env", "production", "--show-keys", "--json", actor=QA)))
    r = requests.post(shown["scoring_uri"], PAYLOAD,
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {shown['primary_key']}"},
                      timeout=30)
    assert r.status_code == 200, r.text
    return r.headers["x-tollgate-model"]


@pytest.mark.slow
def test_the_release_journey_from_the_command_line(ws):
    v1, v3 = f"{MODEL}:1", f"{MODEL}:3"
    assert production_answers_with(ws) == v1

    out = ok(tollgate(ws, "deploy", "--model", MODEL, "--version", "3", "--env", "staging", actor=LEE))
    assert f"{v3}: awaiting approval" in out

    out = ok(tollgate(ws, "smoke-test", "--env", "staging", actor=QA))
    assert out.startswith(f"smoke test of {v3} on staging/") and "PASS (6 cases passed)" in out

    refused = tollgate(ws, "approve", "--model", MODEL, "--version", "3", "--comment", "mine", actor=LEE)
    assert refused.returncode == 2
    assert f"error: {LEE} deployed {v3} and may not also approve it (four eyes)" in refused.stderr
    assert "hint: Another ML lead must approve it." in refused.stderr

    out = ok(tollgate(ws, "approve", "--model", MODEL, "--version", "3", "--comment", "rmse 49.9 vs 54.9", actor=LEAD))
    assert f"{v3}: approved by {LEAD}" in out

    out = ok(tollgate(ws, "promote", "--model", MODEL, "--version", "3", actor=QA))
    assert v3 in out and "100%" in out
    assert production_answers_with(ws) == v3

    out = ok(tollgate(ws, "rollback", "--env", "production", "--comment", "customer complaints", actor=QA))
    assert v1 in out and "100%" in out
    assert production_answers_with(ws) == v1

    trail = json.loads(ok(tollgate(ws, "audit", "--json")))
    steps = [(e["actor"], e["role"], e["action"], e["target"]) for e in reversed(trail)]
    expected = [(LEE, "qa", "deploy", "staging"), (QA, "qa", "smoke_test", None), (LEAD, "ml_lead", "approve", v3),
                (QA, "qa", "promote", "production"), (QA, "qa", "rollback", "production")]
    position = 0
    for actor, role, action, target in expected:
        while position < len(steps) and not (steps[position][:3] == (actor, role, action)
                                             and target in (None, steps[position][3])):
            position += 1
        assert position < len(steps), f"{(actor, role, action, target)} missing or out of order in {steps}"
    rollback = next(e for e in trail if e["action"] == "rollback")
    assert rollback["comment"] == "customer complaints" and rollback["at"]
    assert not any(e["action"] == "approve" and e["actor"] == LEE for e in trail), "a refusal changes nothing"


def test_endpoint_keys_are_masked_unless_qa_asks_for_them(ws):
    primary, secondary = ws.endpoints.keys("production", QA)
    shown = json.loads(ok(tollgate(ws, "endpoint", "--env", "production", "--json")))
    assert shown["scoring_uri"].startswith("http://127.0.0.1:") and shown["scoring_uri"].endswith("/score")
    assert shown["primary_key"] == f"{primary[:4]}…{primary[-4:]}"
    assert shown["secondary_key"] == f"{secondary[:4]}…{secondary[-4:]}"
    assert primary not in json.dumps(shown) and secondary not in json.dumps(shown)

    full = json.loads(ok(tollgate(ws, "endpoint", "--env", "production", "--json", "--show-keys", actor=QA)))
    assert (full["primary_key"], full["secondary_key"]) == (primary, secondary)

    refused = tollgate(ws, "endpoint", "--env", "production", "--json", "--show-keys", actor=SUPPORT)
    assert refused.returncode == 2
    assert f"error: {SUPPORT} (support) may not see endpoint keys" in refused.stderr
    assert primary not in refused.stdout + refused.stderr
