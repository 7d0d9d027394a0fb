"""The example pipelines in docs/pipelines/: what they call, how the gate's answer steers them,
and the same steps run in order against a local workspace.

The GitHub workflow is run by a small emulator of what the runner does for these files:
jobs in order with ``needs``/``if``, ``${{ … }}`` in ``env``, each ``run:`` script under
``bash -e`` with a fresh ``$GITHUB_OUTPUT`` file read back as the step's outputs. Setup steps
(checkout, setup-python, pip install) are skipped: the test runs in this checkout's venv.
The Azure DevOps file calls the same commands; its own glue (the ``##vso`` lines) is run too.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from cli.delivery import AZURE_OUTPUT
from services.permissions import SYSTEM_ACTOR
from tests.conftest import ROOT
from tests.delivery.test_ci_outputs import azure_commands, github_outputs
from tests.release.conftest import LEAD, MODEL, QA, live_workspace

GITHUB = ROOT / "docs" / "pipelines" / "github-actions.yml"
AZURE = ROOT / "docs" / "pipelines" / "azure-devops.yml"
STEPS = ["retrain", "gate", "deploy", "smoke-test", "approve", "promote"]
VENV_BIN = str(Path(sys.executable).parent)


def tollgate_lines(script: str) -> list[str]:
    return [line.strip() for line in script.splitlines() if line.strip().startswith("python tollgate.py")]


def subcommand(line: str) -> str:
    return shlex.split(line)[2]


def github_steps(doc) -> list[tuple[str, dict]]:
    return [(job_id, step) for job_id, job in doc["jobs"].items() for step in job["steps"]]


def azure_jobs(doc) -> list[tuple[dict, dict]]:
    return [(stage, job) for stage in doc["stages"] for job in stage["jobs"]]


def azure_steps(job) -> list[dict]:
    return job.get("steps") or job["strategy"]["runOnce"]["deploy"]["steps"]


def commands(doc, kind: str) -> list[str]:
    steps = [s for _, s in github_steps(doc)] if kind == "github" else \
        [s for _, job in azure_jobs(doc) for s in azure_steps(job)]
    return [line for s in steps for line in tollgate_lines(s.get("run") or s.get("script") or "")]


@pytest.fixture(scope="module")
def github():
    return yaml.safe_load(GITHUB.read_text())


@pytest.fixture(scope="module")
def azure():
    return yaml.safe_load(AZURE.read_text())


# --- what the files say -----------------------------------------------------------------

def test_both_pipelines_call_the_same_cli_steps_in_the_same_order(github, azure):
    gh, az = commands(github, "github"), commands(azure, "azure")
    assert [subcommand(c) for c in gh] == STEPS
    assert gh == az, "the two pipelines run the very same command lines"
    gate = next(c for c in gh if subcommand(c) == "gate")
    assert gate.endswith("|| [ $? -eq 1 ]"), "exit 1 (do not deploy) is a decision; exit 2 still fails the step"


def test_the_gates_answer_steers_the_deployment_in_github_actions(github):
    train, staging, production = (github["jobs"][j] for j in ("train", "staging", "production"))
    gate_step = next(s for s in train["steps"] if s.get("id") == "gate")
    assert subcommand(tollgate_lines(gate_step["run"])[0]) == "gate"
    assert train["outputs"]["deploy_model"] == "${{ steps.gate.outputs.deploy_model }}"
    assert staging["needs"] == "train" and staging["if"] == "needs.train.outputs.deploy_model == 'true'"
    assert set(production["needs"]) == {"train", "staging"}
    assert production["environment"] == "production", "the manual approval: the environment's required reviewers"
    assert staging["environment"] == "staging"


def test_the_gates_answer_steers_the_deployment_in_azure_devops(azure):
    stages = {s["stage"]: s for s in azure["stages"]}
    assert list(stages) == ["Train", "Staging", "Production"]
    train_job = stages["Train"]["jobs"][0]
    gate_step = next(s for s in train_job["steps"] if s.get("name") == "gate")
    assert subcommand(tollgate_lines(gate_step["script"])[0]) == "gate"
    variable = re.search(r"variable=(\w+);isOutput=true", AZURE_OUTPUT).group(1)  # what `gate` prints
    assert stages["Staging"]["condition"] == (
        f"and(succeeded(), eq(dependencies.Train.outputs['{train_job['job']}.{gate_step['name']}.{variable}'], 'yes'))")
    assert stages["Production"]["dependsOn"] == ["Train", "Staging"]
    promote_job = stages["Production"]["jobs"][0]
    assert promote_job["environment"] == "tollgate-production"  # its Approvals check is the manual approval
    for stage in ("Staging", "Production"):
        assert stages[stage]["variables"]["MODEL_VERSION"] == \
            "$[ stageDependencies.Train.TrainAndGate.outputs['train.modelVersion'] ]"


# --- running them ---------------------------------------------------------------------------

EXPR = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


class GitHubRun:
    """Just enough of the Actions runner for these workflows (see the module docstring)."""

    def __init__(self, doc, env: dict, variables: dict, folder: Path):
        self.doc, self.env, self.folder = doc, env, folder
        self.ctx = {"vars": variables, "needs": {}, "steps": {},
                    "github": {"server_url": "https://github.com", "repository": "contoso/tollgate", "run_id": "4242"}}
        self.ran: list[tuple[str, str, subprocess.CompletedProcess]] = []   # (job, step id or name, result)

    def value(self, ref: str) -> str:
        parts = ref.split(".")
        if parts[0] in ("vars", "github"):
            return self.ctx[parts[0]].get(parts[1], "")
        if parts[0] in ("steps", "needs") and parts[2] == "outputs":
            return self.ctx[parts[0]].get(parts[1], {}).get(parts[3], "")
        raise AssertionError(f"the emulator does not know {ref!r}")

    def evaluate(self, expr: str):
        m = re.fullmatch(r"(\S+)\s*(==|!=)\s*'([^']*)'", expr.strip())
        if m:
            left = self.value(m.group(1))
            return left == m.group(3) if m.group(2) == "==" else left != m.group(3)
        return self.value(expr.strip())

    def interpolate(self, text) -> str:
        return EXPR.sub(lambda m: str(self.evaluate(m.group(1))), str(text))

    def run(self, after_job=None) -> None:
        for job_id, job in self.doc["jobs"].items():
            needs = [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", [])
            self.ctx["steps"] = {}
            if any(n not in self.ctx["needs"] for n in needs) or ("if" in job and not self.evaluate(job["if"])):
                continue  # skipped, and so are the jobs that need it
            env = {**self.env, **{k: self.interpolate(v) for k, v in self.doc.get("env", {}).items()},
                   **{k: self.interpolate(v) for k, v in job.get("env", {}).items()}}
            for n, step in enumerate(job["steps"]):
                if "tollgate.py" not in step.get("run", "") or ("if" in step and not self.evaluate(step["if"])):
                    continue
                output = self.folder / f"{job_id}-{n}.github_output"
                output.write_text("")
                step_env = {**env, **{k: self.interpolate(v) for k, v in step.get("env", {}).items()},
                            "GITHUB_OUTPUT": str(output)}
                proc = subprocess.run(["bash", "--noprofile", "--norc", "-e", "-c", step["run"]], cwd=self.folder,
                                      env=step_env, capture_output=True, text=True, timeout=900)
                self.ran.append((job_id, step.get("id") or step.get("name"), proc))
                assert proc.returncode == 0, f"{job_id}/{step.get('name')}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
                if "id" in step:
                    self.ctx["steps"][step["id"]] = github_outputs(output)
            self.ctx["needs"][job_id] = {k: self.interpolate(v) for k, v in job.get("outputs", {}).items()}
            if after_job:
                after_job(job_id)

    def stdout(self, step: str) -> str:
        return next(p.stdout for _, name, p in self.ran if name == step or (name or "").startswith(step))


@pytest.fixture(scope="module")
def ws(demo_template, tmp_path_factory):
    """The demo workspace with the champion serving production, as a pipeline finds it."""
    with live_workspace(demo_template, tmp_path_factory.mktemp("pipeline")) as ws:
        ws.releases.deploy(MODEL, ws.models.champion(MODEL).version, "production", SYSTEM_ACTOR)
        yield ws


@pytest.mark.slow
def test_the_pipeline_steps_run_in_order_against_a_local_workspace(github, azure, ws, tmp_path):
    folder = tmp_path / "checkout"
    folder.mkdir()
    (folder / "tollgate.py").symlink_to(ROOT / "tollgate.py")  # `python tollgate.py` from the checkout
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOLLGATE_", "GITHUB_"))}
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")  # `python` is this venv's
    variables = {"TOLLGATE_WORKSPACE": f"local://{ws.root}", "TOLLGATE_PIPELINE_IDENTITY": QA,
                 "TOLLGATE_APPROVER": LEAD}
    champion_before = ws.models.champion(MODEL).version
    run = GitHubRun(github, env, variables, folder)
    checked_azure = []

    def azure_train_stage(job_id: str) -> None:
        """After the train job: Azure DevOps' own glue reads the same run and answers with the same gate."""
        if job_id != "train":
            return
        version = run.ctx["needs"]["train"]["model_version"]
        train_job = azure["stages"][0]["jobs"][0]
        train_step, gate_step = (next(s for s in train_job["steps"] if s.get("name") == n) for n in ("train", "gate"))
        glue = "\n".join(line for line in train_step["script"].splitlines() if "tollgate.py" not in line)
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", glue], cwd=folder, env=env,
                              capture_output=True, text=True, timeout=60)  # reads the run.json the train step wrote
        assert azure_commands(proc.stdout) == [("task.setvariable", {"variable": "modelVersion", "isOutput": "true"},
                                                version)]
        mapped = {k: v.replace("$(train.modelVersion)", version) for k, v in gate_step["env"].items()}
        azure_vars = {v["name"]: v["value"] for v in azure["variables"] if "name" in v}
        proc = subprocess.run(["bash", "--noprofile", "--norc", "-c", gate_step["script"]], cwd=folder,
                              env={**env, **azure_vars, **mapped, "TOLLGATE_WORKSPACE": variables["TOLLGATE_WORKSPACE"]},
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert azure_commands(proc.stdout) == [("task.setvariable", {"variable": "deployModel", "isOutput": "true"},
                                                "yes")]
        checked_azure.append(version)

    run.run(after_job=azure_train_stage)

    ran = [subcommand(line) for _, _, p in run.ran for line in tollgate_lines(p.args[-1])]
    assert ran == STEPS, "every step ran, in order"
    version = run.ctx["needs"]["train"]["model_version"]
    assert version.isdigit() and int(version) > champion_before and checked_azure == [version]
    assert run.ctx["needs"]["train"]["deploy_model"] == "true"
    registered = ws.models.get(MODEL, int(version))
    assert registered.created_by == QA and ws.jobs.get(registered.run_id).created_by == QA
    assert run.stdout("gate").splitlines()[-1] == AZURE_OUTPUT.format("yes")
    assert f"{MODEL}:{version}: awaiting approval" in run.stdout("Deploy to staging")
    assert run.stdout("Smoke test").startswith(f"smoke test of {MODEL}:{version} on staging/")
    assert f"{MODEL}:{version}: approved by {LEAD}" in run.stdout("Record the approval")

    production = ws.endpoints.get("production")
    serving = [d for d in production.deployments if d.traffic == 100]
    assert [d.model_version for d in serving] == [int(version)], "production serves the new version"
    trail = [e for e in ws.releases.audit() if e.action in ("deploy", "approve", "promote")]
    by_action = {e.action: e for e in reversed(trail)}  # the newest of each: the pipeline's own steps
    assert (by_action["deploy"].actor, by_action["approve"].actor, by_action["promote"].actor) == (QA, LEAD, QA)
    assert by_action["approve"].comment == \
        "approved in the CI environment production: https://github.com/contoso/tollgate/actions/runs/4242"

    # the JUnit reports the pipelines publish: one suite per command, every case passed
    reports = {p.stem: ET.parse(p).getroot().find("testsuite") for p in (folder / "test-results").glob("*.xml")}
    assert set(reports) == {"gate", "deploy", "smoke-test"}
    names = {k: [c.get("name") for c in s.findall("testcase")] for k, s in reports.items()}
    assert names["gate"] == [r.metric for r in ws.policy.gate_rules] + ["rmse improves on the champion"]
    assert names["deploy"][:3] == [f"deployment green ({MODEL}:{version}) created at 0 %", "green healthy",
                                   "smoke test of green"] or names["deploy"][:3] == [
        f"deployment blue ({MODEL}:{version}) created at 0 %", "blue healthy", "smoke test of blue"]
    smoke = ws.releases.smoke_tests(1)[0]   # every smoke test of a version sends the same named cases
    assert names["smoke-test"] == [c.name for c in smoke.cases] + (["latency"] if smoke.latency else [])
    for suite in reports.values():
        assert (suite.get("failures"), suite.get("errors")) == ("0", "0") and int(suite.get("tests")) >= 3


def test_the_pipelines_bound_the_wait_and_publish_junit_reports(github, azure):
    gh = commands(github, "github")
    retrain = next(c for c in gh if subcommand(c) == "retrain")
    assert "--wait --timeout " in retrain
    for step in ("gate", "deploy", "smoke-test"):
        line = next(c for c in gh if subcommand(c) == step)
        assert f"--junit test-results/{step}.xml" in line
    published = [s for _, s in github_steps(github) if "action-junit-report" in s.get("uses", "")]
    assert [s["if"] for s in published] == ["always()", "always()"]
    assert all(s["with"]["report_paths"] == "test-results/*.xml" for s in published)
    tasks = [s for _, job in azure_jobs(azure) for s in azure_steps(job) if s.get("task") == "PublishTestResults@2"]
    assert [(t["condition"], t["inputs"]["testResultsFormat"], t["inputs"]["testResultsFiles"]) for t in tasks] == \
        [("succeededOrFailed()", "JUnit", "test-results/*.xml")] * 2
