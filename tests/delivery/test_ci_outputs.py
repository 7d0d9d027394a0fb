"""``tollgate.py gate`` in CI: the Azure DevOps output variable on stdout, ``deploy_model`` in
$GITHUB_OUTPUT, and the exit codes (0 pass, 1 fail, 2 error), as docs/ci-cd.md documents them.

The lines are checked exactly, and read back the way each CI system reads them: Azure
Pipelines' agent parses ``##vso[area.action key=value;...]message`` from stdout; GitHub
Actions reads ``name=value`` lines from the file named by GITHUB_OUTPUT.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from services.local.workspace import LocalWorkspace
from tests.conftest import ROOT

MODEL = "diabetes-regressor"
AZURE_YES = "##vso[task.setvariable variable=deployModel;isOutput=true]yes"
AZURE_NO = "##vso[task.setvariable variable=deployModel;isOutput=true]no"


def gate(ws_path: Path, *args: str, github_output: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TOLLGATE_AS", "TOLLGATE_WORKSPACE", "GITHUB_OUTPUT")}
    if github_output is not None:
        env["GITHUB_OUTPUT"] = str(github_output)
    return subprocess.run([sys.executable, "tollgate.py", "--workspace", f"local://{ws_path}", "gate", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def azure_commands(stdout: str) -> list[tuple[str, dict[str, str], str]]:
    """Logging commands as the agent reads them: ``##vso[area.action k=v;k=v]message`` per line."""
    found = []
    for line in stdout.splitlines():
        m = re.fullmatch(r"##vso\[(\S+)((?: [^\]]*)?)\](.*)", line)
        if m:
            props = dict(p.split("=", 1) for p in m.group(2).strip().split(";") if p)
            found.append((m.group(1), props, m.group(3)))
    return found


def github_outputs(path: Path) -> dict[str, str]:
    """``name=value`` lines of a GITHUB_OUTPUT file (the single-line form)."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if line)


@pytest.fixture(scope="module")
def versions(demo_ws_path) -> tuple[int, int]:
    """(a version that passes the gate, one that fails it): the champion alias is moved to a
    version with both a better and a worse one beside it (the demo's champion has only better ones)."""
    ws = LocalWorkspace(demo_ws_path)
    try:
        all_versions = [v.version for v in ws.models.versions(MODEL)]
        for champion in sorted(all_versions, key=lambda v: ws.models.get(MODEL, v).metrics["rmse"]):
            ws.models.set_alias(MODEL, "champion", champion, actor="qa@contoso.com")
            verdicts = {v: ws.evaluation.gate(MODEL, v).passed for v in all_versions if v != champion}
            if any(verdicts.values()) and not all(verdicts.values()):
                return (next(v for v, ok in verdicts.items() if ok), next(v for v, ok in verdicts.items() if not ok))
        pytest.fail(f"no champion among {all_versions} leaves both a passing and a failing version")
    finally:
        ws.close()


def test_a_passing_gate_says_yes_to_azure_and_true_to_github(demo_ws_path, versions, tmp_path):
    out = tmp_path / "github_output"
    out.write_text("earlier_step=1\n")  # GitHub's file holds other steps' outputs: append, never truncate
    proc = gate(demo_ws_path, "--model", MODEL, "--version", str(versions[0]), github_output=out)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(": PASS")
    assert lines[-1] == AZURE_YES and lines.count(AZURE_YES) == 1 and AZURE_NO not in lines
    assert azure_commands(proc.stdout) == [("task.setvariable", {"variable": "deployModel", "isOutput": "true"}, "yes")]
    assert out.read_text() == "earlier_step=1\ndeploy_model=true\n"
    assert github_outputs(out) == {"earlier_step": "1", "deploy_model": "true"}


def test_a_failing_gate_says_no_and_false_and_exits_1(demo_ws_path, versions, tmp_path):
    out = tmp_path / "github_output"
    proc = gate(demo_ws_path, "--model", MODEL, "--version", str(versions[1]), github_output=out)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].endswith(": FAIL") and lines[-1] == AZURE_NO and AZURE_YES not in lines
    assert out.read_text() == "deploy_model=false\n"


@pytest.mark.parametrize("model, version", [("nope", "1"), (MODEL, "99")])
def test_an_error_exits_2_and_writes_no_output(demo_ws_path, tmp_path, model, version):
    out = tmp_path / "github_output"
    out.write_text("")
    proc = gate(demo_ws_path, "--model", model, "--version", version, github_output=out)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
    assert proc.stdout == "" and out.read_text() == "", "an error fails the step; it never says yes or no"


def test_json_mode_keeps_stdout_one_document_and_still_writes_github_output(demo_ws_path, versions, tmp_path):
    out = tmp_path / "github_output"
    proc = gate(demo_ws_path, "--model", MODEL, "--version", str(versions[0]), "--json", github_output=out)
    assert proc.returncode == 0
    verdict = json.loads(proc.stdout)
    assert verdict["passed"] is True and verdict["deploy_model"] is True
    assert out.read_text() == "deploy_model=true\n"


def test_without_github_output_only_the_azure_line_is_printed(demo_ws_path, versions, tmp_path):
    proc = gate(demo_ws_path, "--model", MODEL, "--version", str(versions[1]))
    assert proc.returncode == 1 and proc.stdout.splitlines()[-1] == AZURE_NO
    assert "deploy_model" not in proc.stdout


def test_an_unwritable_github_output_is_an_error_not_a_silent_skip(demo_ws_path, versions, tmp_path):
    proc = gate(demo_ws_path, "--model", MODEL, "--version", str(versions[0]), github_output=tmp_path / "no" / "file")
    assert proc.returncode == 2 and "cannot write the gate's output to $GITHUB_OUTPUT" in proc.stderr


def test_help_and_docs_state_the_exit_codes_and_the_exact_lines():
    help_text = subprocess.run([sys.executable, "tollgate.py", "gate", "--help"], cwd=ROOT, capture_output=True,
                               text=True, timeout=60).stdout
    flat = " ".join(help_text.split())
    assert "Exit codes: 0 the gate passes" in flat and "1 it does not pass" in flat and "2 error" in flat
    assert "##vso[task.setvariable variable=deployModel;isOutput=true]yes|no" in help_text
    assert "deploy_model=true|false" in help_text
    doc = (ROOT / "docs" / "ci-cd.md").read_text()
    for line in (AZURE_YES, AZURE_NO, "deploy_model=true", "deploy_model=false"):
        assert line in doc
    assert re.search(r"\|\s*`?0`?\s*\|", doc) and re.search(r"\|\s*`?1`?\s*\|", doc) and re.search(r"\|\s*`?2`?\s*\|", doc)
