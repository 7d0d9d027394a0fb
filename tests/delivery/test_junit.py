"""`gate`, `deploy` and `smoke-test` with ``--junit FILE``: JUnit XML that CI test tabs read
(Azure DevOps PublishTestResults@2, GitHub's JUnit reporters), written whatever the outcome,
and the exit code the same as without it. (The pipeline test in test_pipeline_steps.py runs
`deploy` and `smoke-test` with it against live endpoints.)"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import pytest

import tollgate
from cli import junit
from services.entities import LatencyEvidence, SmokeCase, SmokeTestResult
from services.local.workspace import LocalWorkspace
from services.permissions import SYSTEM_ACTOR
from tests.conftest import copy_workspace

MODEL = "diabetes-regressor"
QA = "qa@contoso.com"


def cli(ws_path: Path, *args: str) -> int:
    return tollgate.main(["--workspace", f"local://{ws_path}", "--as", QA, *args])


def suite_of(path: Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == "testsuites"
    (suite,) = root.findall("testsuite")
    assert root.get("tests") == suite.get("tests") == str(len(suite.findall("testcase")))
    assert root.get("failures") == suite.get("failures") == str(len(suite.findall("testcase/failure")))
    assert suite.get("errors") == str(len(suite.findall("testcase/error")))
    return suite


def cases(suite: ET.Element) -> dict[str, str | None]:
    """testcase name -> None when it passed, else its failure's (or error's) message."""
    out = {}
    for case in suite.findall("testcase"):
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        out[case.get("name")] = None if bad is None else bad.get("message")
    return out


@pytest.fixture(scope="module")
def ws_path(demo_template, tmp_path_factory) -> Path:
    return copy_workspace(demo_template, tmp_path_factory.mktemp("junit") / "ws")


def test_a_passing_gate_has_one_passing_case_per_rule_and_the_improvement(ws_path, tmp_path, capsys):
    ws = LocalWorkspace(ws_path)
    try:
        candidate = max(m.version for m in ws.models.versions(MODEL))
        rules = [r.metric for r in ws.policy.gate_rules]
        expected = ws.evaluation.compare(MODEL, candidate).gate
    finally:
        ws.close()
    assert expected.passed
    assert cli(ws_path, "gate", "--model", MODEL, "--version", str(candidate)) == 0
    plain = capsys.readouterr().out
    report = tmp_path / "gate.xml"
    assert cli(ws_path, "gate", "--model", MODEL, "--version", str(candidate), "--junit", str(report)) == 0
    assert capsys.readouterr().out == plain, "--junit changes nothing else the command prints"
    suite = suite_of(report)
    assert suite.get("name") == "tollgate gate" and suite.get("failures") == "0"
    assert cases(suite) == {**{r: None for r in rules}, "rmse improves on the champion": None}
    outputs = {c.get("name"): c.findtext("system-out") for c in suite.findall("testcase")}
    assert [outputs[r] for r in rules] == [c.reason for c in expected.checks]
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["model"] == f"{MODEL}:{candidate}" and props["decision"] == "pass"
    assert not list(tmp_path.glob(".gate.xml.*")), "no temporary file left behind"


def test_a_failing_gate_carries_each_failed_rule_and_its_message_and_still_exits_1(ws_path, tmp_path):
    ws = LocalWorkspace(ws_path)
    try:
        versions = ws.models.versions(MODEL)
        best = min(versions, key=lambda m: m.metrics["rmse"])
        worst = max((m for m in versions if m.version != best.version), key=lambda m: m.metrics["rmse"])
        ws.models.set_alias(MODEL, "champion", best.version, SYSTEM_ACTOR)   # the others now fail against it
        gate = ws.evaluation.compare(MODEL, worst.version).gate
    finally:
        ws.close()
    assert not gate.passed
    report = tmp_path / "gate.xml"
    assert cli(ws_path, "gate", "--model", MODEL, "--version", str(worst.version), "--junit", str(report)) == 1
    got = cases(suite_of(report))
    assert {c.metric: (None if c.passed else c.reason) for c in gate.checks}.items() <= got.items()
    improvement = got["rmse improves on the champion"]
    assert improvement is not None and improvement.startswith("rmse: must improve on the champion")
    assert int(suite_of(report).get("failures")) == sum(not c.passed for c in gate.checks) + 1


def test_an_error_is_an_error_case_and_the_exit_code_stays_2(ws_path, tmp_path, capsys):
    report = tmp_path / "gate.xml"
    assert cli(ws_path, "gate", "--model", MODEL, "--version", "999", "--junit", str(report)) == 2
    assert "does not exist" in capsys.readouterr().err
    got = cases(suite_of(report))
    assert list(got) == ["gate"] and "diabetes-regressor:999 does not exist" in got["gate"]
    assert suite_of(report).find("testcase/error").text.startswith("model diabetes-regressor:999 does not exist")


def test_a_deploy_refused_before_any_step_reports_why(ws_path, tmp_path):
    ws = LocalWorkspace(ws_path)
    try:
        champion = ws.models.champion(MODEL).version
    finally:
        ws.close()
    report = tmp_path / "deploy.xml"
    # production is reached by promote: refused before anything starts (no endpoint process)
    assert cli(ws_path, "deploy", "--model", MODEL, "--version", str(champion), "--env", "production",
               "--junit", str(report)) == 2
    suite = suite_of(report)
    assert suite.get("name") == "tollgate deploy" and suite.get("errors") == "1"
    assert "production is reached by promote" in cases(suite)["deploy"]


def test_a_report_into_a_missing_folder_is_refused_before_anything_runs(ws_path, tmp_path, capsys):
    assert cli(ws_path, "gate", "--model", MODEL, "--version", "1", "--junit", str(tmp_path / "no" / "g.xml")) == 2
    assert "--junit" in capsys.readouterr().err


def test_a_smoke_test_has_one_case_per_request_and_the_latency():
    result = SmokeTestResult(
        7, "staging", "green", MODEL, 4, datetime.now(timezone.utc), QA, False, "1 of 3 cases failed",
        (SmokeCase("row 12", True, 200, 140.0, 140.0, "prediction matches"),
         SmokeCase("row 31", False, 200, 90.0, 97.5, "prediction 97.5 differs from 90 (> 1e-06)"),
         SmokeCase("malformed request", True, 400, None, None, "answered 400")),
        LatencyEvidence(20, 4.0, 9.0, "blue", 4.0, 8.0, passed=False, reason="p95 9 ms > limit 8.5 ms"))
    suite = junit.Suite("smoke-test")
    junit.smoke_cases(suite, result)
    root = ET.fromstring(ET.tostring(suite.element()))
    assert cases(root) == {"row 12": None, "row 31": "prediction 97.5 differs from 90 (> 1e-06)",
                           "malformed request": None, "latency": "p95 9 ms > limit 8.5 ms"}
    assert root.get("tests") == "4" and root.get("failures") == "2"


def test_hostile_text_is_escaped_and_control_characters_dropped(tmp_path):
    suite = junit.Suite("gate")
    suite.case('<rule a="1"> & ]]>', failure="bad \x1b[31mred\x1b[0m\x00 <b>&amp;</b>\nsecond line")
    path = tmp_path / "r.xml"
    suite.write(path)
    case = ET.parse(path).getroot().find("testsuite/testcase")
    assert case.get("name") == '<rule a="1"> & ]]>'
    assert case.find("failure").get("message") == "bad [31mred[0m <b>&amp;</b>"
    assert case.find("failure").text.endswith("second line")


def test_a_report_replaces_the_old_one_whole(tmp_path):
    path = tmp_path / "r.xml"
    path.write_text("old, not XML")
    suite = junit.Suite("gate")
    suite.case("rmse")
    suite.write(path)
    assert suite_of(path).get("tests") == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["r.xml"]
