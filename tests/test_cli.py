"""The command line, as a pipeline calls it: ``python tollgate.py ...`` in a subprocess.

Exit codes: 0 ok, 1 the thing asked about did not pass, 2 an error (with a
message on stderr, never a traceback).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from services.demo import diabetes_v1
from services.local.workspace import LocalWorkspace
from tests.conftest import copy_workspace

ROOT = Path(__file__).resolve().parent.parent
MODEL = "diabetes-regressor"
LEAD = "lead@contoso.com"  # [roles] of tollgate.toml: registering data and training need ml_lead


def tollgate(ws_path: Path, *args: str, timeout: float = 300, actor: str = LEAD) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "tollgate.py", "--workspace", f"local://{ws_path}", "--as", actor, *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def as_json(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def gbr_version(ws_path: Path) -> int:
    """The demo's gradient boosting candidate (versions vary: the demo trains them in parallel)."""
    ws = LocalWorkspace(ws_path)
    try:
        return next(m.version for m in ws.models.versions(MODEL) if m.estimator == "gbr")
    finally:
        ws.close()


@pytest.fixture
def private_demo(demo_template, tmp_path) -> Path:
    """A demo copy for a test that changes the champion or the policy."""
    return copy_workspace(demo_template, tmp_path / "ws")


# --- reading ------------------------------------------------------------------------------

def test_status_json_summarises_the_workspace(demo_ws_path):
    status = as_json(tollgate(demo_ws_path, "status", "--json"))
    assert len(status["datasets"]) >= 2
    assert {(d["name"], d["version"]) for d in status["datasets"]} >= {("diabetes", 1), ("diabetes", 2)}
    completed = [r for r in status["runs"] if r["status"] == "completed"]
    assert len(completed) >= 4
    for run in completed:
        assert {"rmse", "mae", "r2"} <= set(run["metrics"]), run
    assert len(status["models"]) >= 2
    assert status["champion"] == f"{MODEL}:1"
    assert status["workspace"]["kind"] == "local"


def test_json_flag_works_before_the_command_too(demo_ws_path):
    assert as_json(tollgate(demo_ws_path, "--json", "status"))["champion"] == f"{MODEL}:1"


def test_status_text(demo_ws_path):
    proc = tollgate(demo_ws_path, "status")
    assert proc.returncode == 0
    assert "champion diabetes-regressor:1" in proc.stdout
    assert "completed" in proc.stdout


def test_datasets_lists_versions_and_shows_one(demo_ws_path):
    listing = tollgate(demo_ws_path, "datasets")
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    assert lines[0].split()[:3] == ["NAME", "VERSION", "ROWS"]
    assert any(line.split()[:3] == ["diabetes", "2", "662"] for line in lines)

    versions = as_json(tollgate(demo_ws_path, "datasets", "--json"))
    assert {(v["name"], v["version"], v["rows"]) for v in versions} >= {("diabetes", 1, 442), ("diabetes", 2, 662)}

    one = tollgate(demo_ws_path, "datasets", "diabetes:2")
    assert one.returncode == 0
    assert "diabetes:2  662 rows" in one.stdout and "baseline: 1" in one.stdout
    assert "bmi" in one.stdout and "psi" in one.stdout
    detail = as_json(tollgate(demo_ws_path, "datasets", "diabetes:2", "--json"))
    assert detail["version"]["version"] == 2
    assert {t["check"] for t in detail["tests"]} >= {"schema", "missing", "shift_mean", "psi"}


def test_runs_and_models_json(demo_ws_path):
    runs = as_json(tollgate(demo_ws_path, "runs", "--json"))
    assert len([r for r in runs if r["status"] == "completed"]) >= 4
    assert all({"rmse", "mae", "r2"} <= set(r["metrics"]) for r in runs if r["status"] == "completed")
    limited = as_json(tollgate(demo_ws_path, "runs", "--status", "completed", "--limit", "2", "--json"))
    assert [r["id"] for r in limited] == [r["id"] for r in runs if r["status"] == "completed"][:2]

    models = as_json(tollgate(demo_ws_path, "models", "--json"))
    assert len(models) >= 2
    assert [m["version"] for m in models if "champion" in m["aliases"]] == [1]
    assert all(m["run_id"] and m["dataset"] == "diabetes" for m in models)


def test_models_and_status_say_the_release_stage_as_the_console_does(private_demo):
    from tests.pages.helpers import arrange_stages
    arrange_stages(private_demo, {1: "production", 3: "awaiting_approval", 4: "rolled_back"})
    lines = {line.split()[1]: line for line in tollgate(private_demo, "models").stdout.splitlines()[1:]}
    assert "awaiting approval" in lines["3"] and "rolled back" in lines["4"] and "in production" in lines["1"]
    assert "registered (not deployed)" in lines["2"]
    models = {m["version"]: m for m in as_json(tollgate(private_demo, "models", "--json"))}
    assert (models[3]["release_stage"], models[2]["release_stage"]) == ("awaiting_approval", "registered")
    assert "azure_stage" in models[3] and "stage" not in models[3]   # Azure's own field is never "the" stage
    status = tollgate(private_demo, "status")
    assert "releases   1 awaiting approval, 1 in production, 1 rolled back" in status.stdout
    assert {m["version"]: m["release_stage"] for m in as_json(tollgate(private_demo, "status", "--json"))["models"]
            }[3] == "awaiting_approval"


def test_runs_filtered_by_estimator_metric_and_parameter(demo_ws_path):
    runs = as_json(tollgate(demo_ws_path, "runs", "--json"))
    ridge = [r for r in runs if r["estimator"] == "ridge"]
    cut = sorted(r["metrics"]["rmse"] for r in runs if "rmse" in r["metrics"])[1] + 1e-9  # the two best
    below = as_json(tollgate(demo_ws_path, "runs", "--metric", f"rmse<={cut}", "--json"))
    assert [r["id"] for r in below] == [r["id"] for r in runs if r["metrics"].get("rmse", 1e9) <= cut]
    assert len(below) == 2
    alpha = ridge[0]["params"]["alpha"]
    same = as_json(tollgate(demo_ws_path, "runs", "--estimator", "ridge", "--param", f"alpha={alpha}", "--json"))
    assert [r["id"] for r in same] == [r["id"] for r in ridge if r["params"]["alpha"] == alpha]
    page = as_json(tollgate(demo_ws_path, "runs", "--limit", "2", "--offset", "1", "--json"))
    assert [r["id"] for r in page] == [r["id"] for r in runs][1:3]
    for bad in (["--metric", "rmse ~ 3"], ["--offset", "-1"], ["--param", "alpha > 'x'"]):
        proc = tollgate(demo_ws_path, "runs", *bad)
        assert proc.returncode == 2 and "error:" in proc.stderr, (bad, proc.stderr)


def test_unknown_dataset_is_exit_2_with_a_hint(demo_ws_path):
    proc = tollgate(demo_ws_path, "datasets", "nope:1")
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "nope" in proc.stderr and "hint:" in proc.stderr


# --- registering data -------------------------------------------------------------------------

def test_register_dataset_good_csv_exits_0(demo_ws_path, tmp_path):
    path = tmp_path / "clinic-march.csv"
    diabetes_v1().to_csv(path, index=False)
    proc = tollgate(demo_ws_path, "register-dataset", "clinic", str(path), "--description", "March export")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "registered clinic:1" in proc.stdout and "442 rows" in proc.stdout

    again = as_json(tollgate(demo_ws_path, "register-dataset", "clinic", str(path), "--json"))
    assert again["version"]["version"] == 2 and again["version"]["tests_status"] == "pass"


def test_register_dataset_with_a_missing_column_exits_1_naming_it(demo_ws_path, tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "no-bmi.csv"
    diabetes_v1().to_csv(good, index=False)
    diabetes_v1().drop(columns=["bmi"]).to_csv(bad, index=False)
    assert tollgate(demo_ws_path, "register-dataset", "ward", str(good)).returncode == 0

    proc = tollgate(demo_ws_path, "register-dataset", "ward", str(bad))
    assert proc.returncode == 1
    assert "registered ward:2" in proc.stdout and "FAIL" in proc.stdout
    failing = [line for line in proc.stdout.splitlines() if line.startswith("schema")]
    assert failing and "bmi" in failing[0]


def test_register_dataset_unreadable_or_missing_file_exits_2(demo_ws_path, tmp_path):
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("a,b,target\n1,2,3\n4,5\n")
    proc = tollgate(demo_ws_path, "register-dataset", "ragged", str(ragged))
    assert proc.returncode == 2 and "ragged.csv" in proc.stderr and "line 3" in proc.stderr
    proc = tollgate(demo_ws_path, "register-dataset", "ghost", str(tmp_path / "nowhere.csv"))
    assert proc.returncode == 2 and "nowhere.csv" in proc.stderr
    assert "ragged" not in as_json(tollgate(demo_ws_path, "status", "--json"))["datasets"]


# --- training -------------------------------------------------------------------------------------

def test_retrain_wait_runs_the_pipeline_and_reports_the_gate(demo_ws_path):
    run = as_json(tollgate(demo_ws_path, "retrain", "--dataset", "diabetes:2", "--estimator", "ridge",
                           "--param", "alpha=0.5", "--wait", "--json"))
    assert run["status"] == "completed"
    assert (run["dataset"], run["dataset_version"], run["params"]["alpha"]) == ("diabetes", 2, 0.5)
    assert {"rmse", "mae", "r2"} <= set(run["metrics"])
    assert run["gate"]["champion"] == f"{MODEL}:1"
    assert isinstance(run["gate"]["passed"], bool) and run["gate"]["reasons"]
    assert (run["model_version"] is not None) == run["gate"]["passed"]
    assert run["id"] in [r["id"] for r in as_json(tollgate(demo_ws_path, "runs", "--json"))]


def test_retrain_wait_on_a_failing_dataset_exits_1_with_the_reason(demo_ws_path, tmp_path):
    broken = diabetes_v1().astype({"bmi": object})
    broken.loc[7, "bmi"] = "twenty-six"
    path = tmp_path / "broken.csv"
    broken.to_csv(path, index=False)
    assert tollgate(demo_ws_path, "register-dataset", "broken", str(path)).returncode == 1

    proc = tollgate(demo_ws_path, "retrain", "--dataset", "broken:1", "--wait")
    assert proc.returncode == 1
    assert ": failed" in proc.stdout
    reason = next(line for line in proc.stdout.splitlines() if line.startswith("reason:"))
    assert "broken:1" in reason and "bmi" in reason and "twenty-six" in reason


def test_retrain_with_a_bad_parameter_exits_2(demo_ws_path):
    proc = tollgate(demo_ws_path, "retrain", "--estimator", "ridge", "--param", "alhpa=1")
    assert proc.returncode == 2 and "alhpa" in proc.stderr


def test_log_and_cancel_of_a_finished_run(demo_ws_path):
    run_id = as_json(tollgate(demo_ws_path, "runs", "--status", "completed", "--limit", "1", "--json"))[0]["id"]
    log = tollgate(demo_ws_path, "log", run_id, "--tail", "1")
    assert log.returncode == 0 and log.stdout.strip().endswith("completed")
    cancel = tollgate(demo_ws_path, "cancel", run_id)
    assert cancel.returncode == 2 and "already ended" in cancel.stderr


# --- the gate -------------------------------------------------------------------------------------

def test_gate_passes_for_a_better_candidate(demo_ws_path):
    version = gbr_version(demo_ws_path)
    proc = tollgate(demo_ws_path, "gate", "--model", MODEL, "--version", str(version))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith(f"{MODEL}:{version} vs champion {MODEL}:1 on diabetes:2")
    assert "PASS" in proc.stdout.splitlines()[0]

    result = as_json(tollgate(demo_ws_path, "gate", "--model", MODEL, "--version", str(version), "--json"))
    assert result["passed"] is True and result["champion"] == f"{MODEL}:1"
    assert result["candidate_metrics"]["rmse"] < result["champion_metrics"]["rmse"]
    assert {c["metric"] for c in result["checks"]} == {"rmse", "mae", "r2"}


def test_gate_fails_for_the_champions_predecessor(private_demo):
    version = gbr_version(private_demo)
    ws = LocalWorkspace(private_demo)
    ws.models.set_alias(MODEL, "champion", version, actor="qa@contoso.com")  # promote the better model; v1 is now its predecessor
    ws.close()
    proc = tollgate(private_demo, "gate", "--model", MODEL, "--version", "1")
    assert proc.returncode == 1
    assert "FAIL" in proc.stdout.splitlines()[0] and f"champion {MODEL}:{version}" in proc.stdout
    assert any(line.strip().startswith("! rmse") for line in proc.stdout.splitlines())


def test_gate_follows_the_policy_file(private_demo):
    (private_demo / "tollgate.toml").write_text(
        '[gate]\nrequire_improvement = ""\n[[gate.rules]]\nmetric = "r2"\ndirection = "higher"\nmin = 0.95\n')
    result = tollgate(private_demo, "gate", "--model", MODEL, "--version", str(gbr_version(private_demo)), "--json")
    assert result.returncode == 1
    verdict = json.loads(result.stdout)
    assert verdict["passed"] is False
    assert len(verdict["reasons"]) == 1 and "r2" in verdict["reasons"][0] and "0.95" in verdict["reasons"][0]


@pytest.mark.parametrize("model, version, message", [
    ("nope", "1", "model 'nope' is not registered"),
    (MODEL, "99", f"model {MODEL}:99 does not exist"),
])
def test_gate_of_an_unknown_model_or_version_exits_2(demo_ws_path, model, version, message):
    proc = tollgate(demo_ws_path, "gate", "--model", model, "--version", version)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert f"error: {message}" in proc.stderr and "hint:" in proc.stderr


def test_unknown_workspace_scheme_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "tollgate.py", "--workspace", "ftp://somewhere", "status"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "ftp" in proc.stderr and "Traceback" not in proc.stderr


def test_an_empty_workspace(tmp_path):
    empty = tmp_path / "new-ws"
    status = as_json(tollgate(empty, "status", "--json"))
    assert (status["datasets"], status["runs"], status["models"], status["champion"]) == ([], [], [], None)
    proc = tollgate(empty, "retrain", "--wait")
    assert proc.returncode == 2
    assert "no dataset" in proc.stderr and "register-dataset" in proc.stderr


# --- provenance and checking a file -----------------------------------------------------------

def test_provenance_of_a_model_version_and_of_its_run(demo_ws_path):
    shown = as_json(tollgate(demo_ws_path, "models", "--json"))[0]
    model = as_json(tollgate(demo_ws_path, "provenance", f"{shown['name']}:{shown['version']}", "--json"))
    run = as_json(tollgate(demo_ws_path, "provenance", shown["run_id"], "--json"))
    assert model["provenance"] == run["provenance"]
    assert model["provenance"]["requested_by"] == shown["created_by"]
    assert model["provenance"]["packages"]["scikit-learn"]

    text = tollgate(demo_ws_path, "provenance", shown["run_id"]).stdout
    assert f"run {shown['run_id']}" in text
    for label in ("requested by", "code", "python", "packages", "environment.txt"):
        assert label in text, label


@pytest.mark.parametrize("ref, message", [("run-00000000-000000-000000", "does not exist"),
                                          ("diabetes-regressor:99", "99"), ("a:b:c", "neither a run id")])
def test_provenance_of_something_unknown_exits_2(demo_ws_path, ref, message):
    proc = tollgate(demo_ws_path, "provenance", ref)
    assert proc.returncode == 2 and message in proc.stderr.lower(), proc.stderr


def test_check_dataset_exits_1_on_a_failing_file_and_registers_nothing(demo_ws_path, tmp_path):
    before = as_json(tollgate(demo_ws_path, "datasets", "--json"))
    bad = tmp_path / "no-bmi.csv"
    diabetes_v1().drop(columns=["bmi"]).to_csv(bad, index=False)
    proc = tollgate(demo_ws_path, "check-dataset", "diabetes", str(bad))
    assert proc.returncode == 1, proc.stderr
    assert "FAIL" in proc.stdout and "against diabetes:2" in proc.stdout and "bmi" in proc.stdout
    assert "nothing was registered" in proc.stdout

    good = tmp_path / "same.csv"
    diabetes_v1().to_csv(good, index=False)
    result = as_json(tollgate(demo_ws_path, "check-dataset", "diabetes", str(good), "--json"))
    assert result["registered"] is False and result["check"]["baseline_version"] == 2
    assert result["status"] in ("pass", "warn")
    assert as_json(tollgate(demo_ws_path, "datasets", "--json")) == before


def test_check_dataset_of_an_unknown_dataset_or_a_missing_file_exits_2(demo_ws_path, tmp_path):
    good = tmp_path / "same.csv"
    diabetes_v1().to_csv(good, index=False)
    proc = tollgate(demo_ws_path, "check-dataset", "nowhere", str(good))
    assert proc.returncode == 2 and "nowhere" in proc.stderr
    proc = tollgate(demo_ws_path, "check-dataset", "diabetes", str(tmp_path / "missing.csv"))
    assert proc.returncode == 2 and "missing.csv" in proc.stderr


def test_a_failing_version_is_not_shown_or_trained_by_default(private_demo, tmp_path):
    bad = tmp_path / "no-age.csv"
    diabetes_v1().drop(columns=["age"]).to_csv(bad, index=False)
    assert tollgate(private_demo, "register-dataset", "diabetes", str(bad)).returncode == 1
    proc = tollgate(private_demo, "datasets", "diabetes")
    assert proc.stdout.startswith("diabetes:2 ") and "diabetes:3 failed its data tests" in proc.stderr
    proc = tollgate(private_demo, "retrain", "--estimator", "ridge", "--param", "alpha=1000", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dataset_version"] == 2 and "training on diabetes:2" in proc.stderr
    tollgate(private_demo, "cancel", json.loads(proc.stdout)["id"])
