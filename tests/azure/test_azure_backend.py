"""The Azure adapter's own behaviour beyond the contract suite: the REST calls it makes for
datasets, jobs and models, and how few of them."""
from __future__ import annotations

import pandas as pd
import pytest

from services.demo import diabetes_v1
from services.entities import RunStatus, TrainingSpec
from services.errors import Conflict

MODEL = "diabetes-regressor"
LEAD, QA = "lead@contoso.com", "qa@contoso.com"


def test_listing_runs_costs_the_same_few_requests_for_any_number_of_runs(ws):
    ws.replay.reset_calls()
    runs = ws.jobs.list()
    assert len(runs) == 5 and all(r.metrics.get("rmse") for r in runs)
    hosts = [(c.method, c.path.rsplit("/", 2)[-1]) for c in ws.replay.calls]
    # jobs list (each job names the MLflow tracking URI: no workspace GET), one MLflow search for every run
    assert hosts == [("GET", "jobs"), ("POST", "search")]
    assert ws.replay.calls[1].host == "westeurope.api.azureml.ms"
    ws.jobs.list()
    assert len(ws.replay.calls) == 2, "a second listing within the cache TTL sends nothing"


def test_without_a_tracking_service_on_the_jobs_the_workspace_names_the_mlflow_uri():
    from services.azure.replay import ARM_HOST, FIXTURES, ReplayTransport
    from services.azure.workspace import open_replay
    t = ReplayTransport(FIXTURES)
    jobs = [p for p, r in t.arm.resources.items() if r.get("type", "").endswith("/jobs")]
    assert len(jobs) == 5
    for path in jobs:                                   # jobs naming another workspace's tracking URI
        job = t.arm.get(path)
        tracking = job["properties"]["services"]["Tracking"]
        tracking["endpoint"] = tracking["endpoint"].replace("/workspaces/tollgate-demo?", "/workspaces/elsewhere?")
        t.arm.put_raw(path, job)
    workspace = open_replay(transport=t)
    try:
        t.reset_calls()
        assert len(workspace.jobs.list()) == 5
        assert [(c.method, c.host, c.path.rsplit("/", 1)[-1]) for c in t.calls] == [
            ("GET", ARM_HOST, "jobs"), ("GET", ARM_HOST, "tollgate-demo"),
            ("POST", "westeurope.api.azureml.ms", "search")]
    finally:
        workspace.close()


def test_a_run_has_its_lineage_gate_steps_history_and_log(ws):
    registered = [r for r in ws.jobs.list() if r.model_version]
    assert len(registered) == 5
    run = next(r for r in registered if r.estimator == "gbr")
    assert run.status == RunStatus.COMPLETED and run.gate.passed
    assert (run.dataset, run.dataset_version) == ("diabetes", 2)
    assert run.created_at <= run.started_at <= run.ended_at
    model = ws.models.get(MODEL, run.model_version)
    assert model.run_id == run.id and model.metrics["rmse"] == pytest.approx(run.metrics["rmse"])
    assert {s.display_name for s in ws.jobs.steps(run.id)} == {"validate data", "train", "evaluate", "register"}
    curve = ws.jobs.metric_history(run.id, "val_rmse")
    assert len(curve) >= 3 and curve == sorted(curve, key=lambda p: p.step)
    log = ws.jobs.log(run.id)
    assert "[train]" in log and ws.jobs.log(run.id, tail=1) == log.splitlines()[-1]


def test_register_dataset_uploads_then_puts_the_version_with_profile_and_tests(ws, tmp_path):
    path = tmp_path / "march.csv"
    diabetes_v1().head(300).to_csv(path, index=False)
    ws.replay.reset_calls()
    dv = ws.datasets.register("diabetes", path, description="March", actor="Lead@Contoso.com")
    assert (dv.version, dv.rows, dv.baseline_version, dv.created_by) == (3, 300, 2, LEAD)
    [put] = ws.replay.find("PUT", r"/data/diabetes/versions/3$")
    props = put.json["properties"]
    assert props["dataType"] == "uri_file" and props["dataUri"].endswith("/march.csv")
    assert props["properties"]["tollgate.rows"] == "300" and "bmi" in props["properties"]["tollgate.profile"]
    uploads = [c for c in ws.replay.calls if c.method == "PUT" and c.path.endswith("/march.csv")]
    assert uploads and ws.replay.calls.index(uploads[-1]) < ws.replay.calls.index(put), "the file first"
    assert ws.datasets.data_tests("diabetes", 3)
    pd.testing.assert_frame_equal(ws.datasets.load("diabetes", 3), diabetes_v1().head(300), check_dtype=False)


def test_a_version_number_taken_meanwhile_moves_to_the_next(ws, tmp_path):
    path = tmp_path / "d.csv"
    diabetes_v1().to_csv(path, index=False)
    ws.replay.fail_next("PUT", r"/data/diabetes/versions/3$", 409,
                        body={"error": {"code": "UserError", "message": "version 3 already exists"}})
    dv = ws.datasets.register("diabetes", path, actor=LEAD)
    assert dv.version == 4
    assert [c.status for c in ws.replay.find("PUT", r"/data/diabetes/versions/\d+$")] == [409, 201]


def test_a_failed_registration_leaves_no_file_behind(ws, tmp_path):
    path = tmp_path / "d.csv"
    diabetes_v1().to_csv(path, index=False)
    ws.replay.fail_next("PUT", r"/data/diabetes/versions/3$", 400,
                        body={"error": {"code": "UserError", "message": "bad request"}})
    with pytest.raises(Exception):
        ws.datasets.register("diabetes", path, actor=LEAD)
    container = ws.blobs._container(ws.settings.datastore).container_name
    assert not [p for p in ws.replay.blobs.list(f"/{container}/tollgate/datasets/diabetes/") if p.endswith("/d.csv")]
    assert [v.version for v in ws.datasets.versions("diabetes")] == [2, 1]


def test_tagging_an_archived_version_keeps_it_archived(ws):
    ws.models.archive(MODEL, 4, actor=LEAD)
    tagged = ws.models.set_tags(MODEL, 4, {"reviewed": "yes"}, actor=LEAD)
    assert tagged.archived and tagged.tags["reviewed"] == "yes"
    put = ws.replay.find("PUT", r"/models/diabetes-regressor/versions/4$")[-1]
    assert put.json["properties"]["isArchived"] is True, "create_or_update would have sent false"
    described = ws.models.set_description(MODEL, 4, "kept for the record", actor=LEAD)
    assert described.archived


def test_aliases_live_on_the_model_container(ws):
    ws.models.set_alias(MODEL, "champion", 3, actor=QA)
    put = ws.replay.find("PUT", r"/models/diabetes-regressor$")[-1]
    assert put.json["properties"]["tags"]["tollgate.alias.champion"] == "3"
    assert ws.models.champion(MODEL).version == 3
    with pytest.raises(Conflict):
        ws.models.archive(MODEL, 3, actor=LEAD)


def test_compare_loads_each_model_once(ws):
    first = ws.evaluation.compare(MODEL, 2)
    ws.replay.reset_calls()
    again = ws.evaluation.compare(MODEL, 2)
    assert again.candidate_metrics == first.candidate_metrics
    assert not [c for c in ws.replay.calls if c.path.endswith("model.pkl") or "/datasets/" in c.path], \
        "fitted models and data of immutable versions are kept"


def _reads(t) -> list[str]:
    return [c.path.split("/tollgate/", 1)[-1] for c in t.calls if c.method == "GET" and "/tollgate/" in c.path]


def test_an_evaluation_is_kept_and_the_next_review_reads_one_file(ws):
    from dataclasses import replace
    from services.azure.workspace import open_replay
    t = ws.replay
    t.reset_calls()
    scored = ws.evaluation.compare(MODEL, 2)                  # v2 vs the champion v1: never evaluated before
    assert {"models/diabetes-regressor/2/model.pkl", "models/diabetes-regressor/1/model.pkl"} <= set(_reads(t))
    kept = [c for c in t.calls if c.method == "PUT" and "/tollgate/evaluations/" in c.path]
    assert len(kept) == 1 and kept[0].path.endswith(f"/evaluations/{MODEL}/2/vs-v1-diabetes-2-"
                                                    f"{kept[0].path.rsplit('-', 1)[-1]}")
    other = open_replay(transport=t)                          # another console, nothing in memory
    t.reset_calls()
    again = other.evaluation.compare(MODEL, 2)
    assert again == scored                                    # metrics, gate and every prediction
    assert _reads(t) == [kept[0].path.split("/tollgate/", 1)[-1]]
    # another split is another evaluation: scored, not read
    other.evaluation.policy = replace(other.policy, test_fraction=0.3)
    t.reset_calls()
    third = other.evaluation.compare(MODEL, 2)
    assert len(third.actual) != len(scored.actual)
    assert "models/diabetes-regressor/2/model.pkl" in _reads(t)
    other.close()


def test_an_unreadable_kept_evaluation_is_scored_again(ws):
    t = ws.replay
    scored = ws.evaluation.compare(MODEL, 2)
    path = next(c.path for c in t.calls if c.method == "PUT" and "/tollgate/evaluations/" in c.path)
    t.blobs.put(path, b"not json")
    from services.azure.workspace import open_replay
    other = open_replay(transport=t)
    assert other.evaluation.compare(MODEL, 2) == scored
    other.close()


def test_submit_sends_a_command_job_running_the_pipeline_on_the_compute(ws):
    run = ws.jobs.submit(TrainingSpec(dataset="diabetes", dataset_version=2, estimator="gbr",
                                      params={"n_estimators": 50}, experiment="retrain"), LEAD)
    assert run.status == RunStatus.QUEUED and run.dataset_version == 2
    [put] = ws.replay.find("PUT", rf"/jobs/{run.id}$")
    props = put.json["properties"]
    assert props["jobType"] == "Command" and props["computeId"].endswith("/computes/cpu-cluster")
    assert props["command"].startswith("python -m pipeline.train --data ${{inputs.data}} --estimator gbr")
    assert "--param n_estimators=50" in props["command"]
    assert props["codeId"].endswith("/codes/tollgate-pipeline/versions/" + props["codeId"].rsplit("/", 1)[-1])
    assert props["inputs"]["data"]["uri"].endswith("diabetes/versions/2") or "diabetes:2" in props["inputs"]["data"]["uri"]
    uploaded = [c.path for c in ws.replay.calls if c.method == "PUT" and "/tollgate/code/" in c.path]
    assert any(p.endswith("/pipeline/train.py") for p in uploaded)
    ws.jobs.submit(TrainingSpec(dataset="diabetes", estimator="ridge"), LEAD)
    assert len([c for c in ws.replay.calls if c.method == "PUT" and "/tollgate/code/" in c.path]) == len(uploaded), \
        "the code is uploaded once"
    canceled = ws.jobs.cancel(run.id, actor=LEAD)
    assert canceled.status == RunStatus.CANCELED
    assert ws.replay.find("POST", rf"/jobs/{run.id}/cancel$")
