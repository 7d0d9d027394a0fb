"""JobStore: real training runs — submit, metrics, logs, failure, cancel, queue, filters —
and the pipeline's last step, registration behind the quality gate."""
from __future__ import annotations

import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from services.entities import Condition, RunFilter, RunStatus
from services.errors import Conflict, InvalidInput, NotFound
from services.run_search import matches, parse_condition

from .helpers import ADMIN, LEAD, ROLES_TOML, SLOW, allowing_slow, diabetes, eventually, spec, wait_status, write_csv

EXPERIMENT = "contract-jobs"
SINGLE_SLOT = "[jobs]\nmax_concurrent = 1\n[training.bounds]\nn_estimators = 100000\n" + ROLES_TOML  # SLOW runs


@pytest.fixture(scope="module")
def finished(backend, demo):
    """Three runs on diabetes:2 submitted together (two slots), waited for.

    ``better`` beats the champion (demo v1, a heavily regularised ridge) and is
    registered; ``worse`` does not; ``unregistered`` passes but asked not to be registered.
    The folder of a model v6 that never committed lies where ``better`` will register."""
    interrupted = backend.leave_interrupted_version(demo, "models", "diabetes-regressor", 6)
    before = datetime.now(timezone.utc)
    submitted = {
        "better": demo.jobs.submit(spec(version=2, params={"alpha": 1.0}, experiment=EXPERIMENT), LEAD),
        "worse": demo.jobs.submit(spec(version=None, params={"alpha": 1000.0}, experiment=EXPERIMENT), LEAD),
        "unregistered": demo.jobs.submit(spec(version=2, params={"alpha": 1.0}, experiment=EXPERIMENT,
                                              register=False, display_name="evaluate only"), LEAD),
    }
    runs = {key: demo.jobs.wait(run.id, timeout_s=180) for key, run in submitted.items()}
    return {"submitted": submitted, "runs": runs, "before": before, "after": datetime.now(timezone.utc),
            "interrupted": interrupted}


def test_submit_returns_at_once_with_a_queued_run(finished):
    for run in finished["submitted"].values():
        assert run.status == RunStatus.QUEUED
        assert run.started_at is None and run.ended_at is None
        assert run.metrics == {}


def test_completed_run_has_metrics_history_log_times_and_data(demo, finished):
    run = finished["runs"]["better"]
    assert run.status == RunStatus.COMPLETED, run.error
    assert (run.experiment, run.estimator, dict(run.params)) == (EXPERIMENT, "ridge", {"alpha": 1.0})
    assert (run.dataset, run.dataset_version) == ("diabetes", 2)
    assert run.created_at <= run.started_at <= run.ended_at
    assert run.duration_s > 0
    assert run.error is None
    for key in ("rmse", "mae", "r2"):
        assert isinstance(run.metrics[key], float), key
    assert 30 < run.metrics["rmse"] < 80 and 0 < run.metrics["r2"] < 1

    history = demo.jobs.metric_history(run.id)
    assert {"rmse", "mae", "r2"} <= {p.key for p in history}
    curve = [p for p in history if p.key not in ("rmse", "mae", "r2", "train_rmse", "train_r2")]
    assert len(curve) >= 3 and len({p.step for p in curve}) >= 3, "a per-step training curve"
    rmse_points = demo.jobs.metric_history(run.id, "rmse")
    assert {p.key for p in rmse_points} == {"rmse"}
    assert rmse_points[-1].value == pytest.approx(run.metrics["rmse"])

    log = demo.jobs.log(run.id)
    assert "train" in log and "completed" in log
    assert demo.jobs.log(run.id, tail=2).splitlines() == log.splitlines()[-2:]


def test_latest_dataset_version_is_recorded_on_the_run(finished):
    run = finished["runs"]["worse"]
    assert (run.dataset, run.dataset_version) == ("diabetes", 2)


def test_a_candidate_that_beats_the_champion_is_registered_with_lineage(demo, finished):
    run = finished["runs"]["better"]
    assert run.gate is not None and run.gate.passed, run.gate
    assert run.gate.champion == "diabetes-regressor:1"
    assert run.gate.evaluated_on == "diabetes:2"
    assert (run.model_name, run.model_version) == ("diabetes-regressor", 6)  # the demo has v1..v5

    model = demo.models.get(run.model_name, run.model_version)
    assert model.run_id == run.id
    assert (model.dataset, model.dataset_version) == ("diabetes", 2)
    assert model.estimator == "ridge"
    for key in ("rmse", "mae", "r2"):
        assert model.metrics[key] == pytest.approx(run.metrics[key])
    assert not model.is_champion, "a candidate does not replace the champion by itself"
    assert demo.models.champion("diabetes-regressor").version == 1


def test_a_model_version_left_half_written_does_not_block_registration(backend, demo, finished):
    if not finished["interrupted"]:
        pytest.skip(f"{backend.name} has no half-written versions")
    run = finished["runs"]["better"]
    assert run.model_version == 6, run.error
    assert demo.models.load("diabetes-regressor", 6) is not None
    assert not any("half-written" in f for f in backend.stored_files(demo, "models"))


def test_a_candidate_that_does_not_beat_the_champion_is_completed_but_not_registered(demo, finished):
    run = finished["runs"]["worse"]
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.gate is not None and not run.gate.passed
    assert run.gate.champion == "diabetes-regressor:1"
    assert any(r.startswith("rmse") for r in run.gate.reasons), run.gate.reasons
    failed_checks = {c.metric for c in run.gate.checks if not c.passed}
    assert "rmse" in failed_checks
    assert run.model_version is None and run.model_name is None
    assert all(m.run_id != run.id for m in demo.models.versions("diabetes-regressor"))


def test_register_false_evaluates_but_never_registers(demo, finished):
    run = finished["runs"]["unregistered"]
    assert run.status == RunStatus.COMPLETED, run.error
    assert run.display_name == "evaluate only"
    assert run.gate is not None and run.gate.passed
    assert run.model_version is None
    assert all(m.run_id != run.id for m in demo.models.versions("diabetes-regressor"))


# --- what submit refuses -----------------------------------------------------------------

@pytest.mark.parametrize("estimator, params", [
    ("xgboost", {}),
    ("ridge", {"alhpa": 1.0}),
    ("ridge", {"alpha": "strong"}),
    ("ridge", {"alpha": -1}),
    ("gbr", {"n_estimators": "1.5"}),
    ("gbr", {"n_estimators": 1.5}),
    ("gbr", {"n_estimators": 1_000_000_000}),         # beyond the built-in [training.bounds]
    ("random_forest", {"max_depth": 100_000}),
    ("ridge", {"alpha": float("nan")}),
    ("lasso", {"alpha": float("inf")}),
])
def test_bad_estimator_or_parameter_is_invalid_input_and_creates_no_run(demo, estimator, params):
    before = len(demo.jobs.list())
    with pytest.raises(InvalidInput) as err:
        demo.jobs.submit(spec(estimator=estimator, params=params), LEAD)
    assert (estimator if estimator == "xgboost" else next(iter(params))) in str(err.value)
    assert len(demo.jobs.list()) == before


def test_the_policy_bounds_what_a_run_may_ask_for(backend):
    ws = backend.demo(ROLES_TOML + "\n[training.bounds]\nn_estimators = 50\n[training.bounds.gbr]\nmax_depth = [2, 4]\n")
    before = len(ws.jobs.list())
    for estimator, params in (("gbr", {"n_estimators": 51}), ("random_forest", {"n_estimators": 51}),
                              ("gbr", {"max_depth": 5})):
        with pytest.raises(InvalidInput, match="out of bounds") as err:
            ws.jobs.submit(spec(estimator=estimator, params=params), LEAD)
        assert next(iter(params)) in str(err.value) and "[training.bounds]" in err.value.hint
    assert len(ws.jobs.list()) == before


@pytest.mark.parametrize("dataset, version", [("nope", None), ("diabetes", 99)])
def test_unknown_dataset_is_not_found_and_creates_no_run(demo, dataset, version):
    before = len(demo.jobs.list())
    with pytest.raises(NotFound):
        demo.jobs.submit(spec(dataset, version), LEAD)
    assert len(demo.jobs.list()) == before


def test_training_on_data_that_fails_its_tests_fails_with_the_reason(demo, tmp_path):
    demo.datasets.register("diabetes-broken", write_csv(tmp_path, diabetes(), "good.csv"), actor=LEAD)
    broken = demo.datasets.register("diabetes-broken", write_csv(tmp_path, diabetes().drop(columns=["bmi"])),
                                    actor=LEAD)
    models_before = len(demo.models.versions())

    submitted = demo.jobs.submit(spec("diabetes-broken", broken.version, experiment="contract-fail"), LEAD)
    run = demo.jobs.wait(submitted.id, timeout_s=120)
    assert run.status == RunStatus.FAILED
    assert run.step == "validate data"
    assert "diabetes-broken:2" in run.error and "schema" in run.error and "bmi" in run.error
    assert run.ended_at is not None and run.metrics == {}
    assert run.model_version is None
    assert len(demo.models.versions()) == models_before


# --- cancel, kill, queue ------------------------------------------------------------------

def test_cancel_a_running_run_stops_its_process(backend, demo):
    run = backend.with_policy(demo, allowing_slow(demo.policy)).jobs.submit(
        spec(version=2, experiment="contract-cancel", **SLOW), LEAD)
    eventually(lambda: demo.jobs.get(run.id).step == "train", 60, "the run to start training")
    assert demo.jobs.wait(run.id, timeout_s=0.5).status == RunStatus.RUNNING, "wait returns at its timeout"

    canceled = demo.jobs.cancel(run.id, actor=ADMIN)
    assert canceled.status == RunStatus.CANCELED
    assert canceled.ended_at is not None and canceled.error
    eventually(lambda: not backend.runner_alive(demo, run.id), 15, "the job process to exit")
    assert demo.jobs.get(run.id).status == RunStatus.CANCELED
    assert all(m.run_id != run.id for m in demo.models.versions())


def test_cancel_a_queued_run(backend, demo):
    run = backend.with_policy(demo, allowing_slow(demo.policy)).jobs.submit(
        spec(version=2, experiment="contract-cancel", **SLOW), LEAD)
    assert run.status == RunStatus.QUEUED
    canceled = demo.jobs.cancel(run.id, LEAD)
    assert canceled.status == RunStatus.CANCELED
    assert canceled.started_at is None, "it never got a slot"
    assert canceled.ended_at is not None
    eventually(lambda: not backend.runner_alive(demo, run.id), 15, "the job process to exit")


def test_cancel_of_an_ended_run_is_a_conflict(demo):
    done = demo.jobs.list(RunFilter(status=(RunStatus.COMPLETED,), limit=1))[0]
    with pytest.raises(Conflict):
        demo.jobs.cancel(done.id, LEAD)
    assert demo.jobs.get(done.id).status == RunStatus.COMPLETED
    with pytest.raises(NotFound):
        demo.jobs.cancel("run-that-never-was", LEAD)


def start_two_on_one_slot(ws):
    """Two slow runs on a single slot: (the one holding it, the one queued behind it)."""
    runs = [ws.jobs.submit(spec(version=2, **SLOW), LEAD) for _ in range(2)]
    holder = eventually(lambda: next((r for r in map(ws.jobs.get, [r.id for r in runs])
                                      if r.status == RunStatus.RUNNING), None), 60, "one run to take the slot")
    waiting = next(r for r in runs if r.id != holder.id)
    eventually(lambda: ws.jobs.log(waiting.id), 60, "the second job process to start")
    return holder, waiting


def test_runs_beyond_max_concurrent_wait_queued_for_a_slot(backend):
    ws = backend.demo(policy_toml=SINGLE_SLOT)
    try:
        holder, waiting = start_two_on_one_slot(ws)
        time.sleep(1)  # the waiting process polls for a slot; give it the chance to (wrongly) take one
        held = ws.jobs.get(waiting.id)
        assert held.status == RunStatus.QUEUED and held.started_at is None
        assert [r.id for r in ws.jobs.list(RunFilter(status=(RunStatus.QUEUED,)))] == [waiting.id]
        assert [r.id for r in ws.jobs.list(RunFilter(status=(RunStatus.RUNNING,)))] == [holder.id]

        holder = ws.jobs.cancel(holder.id, LEAD)
        waiting = wait_status(ws, waiting.id, RunStatus.RUNNING)
        assert waiting.started_at >= holder.ended_at
        assert ws.jobs.cancel(waiting.id, LEAD).status == RunStatus.CANCELED
    finally:
        backend.release(ws)


def test_a_killed_job_process_is_reconciled_to_failed_and_frees_its_slot(backend):
    ws = backend.demo(policy_toml=SINGLE_SLOT)
    try:
        victim, waiting = start_two_on_one_slot(ws)
        assert ws.jobs.get(waiting.id).status == RunStatus.QUEUED

        backend.kill_runner(ws, victim.id)
        # only the waiting run is read: nobody lists runs, yet the dead one must not hold the slot
        wait_status(ws, waiting.id, RunStatus.RUNNING, timeout_s=30)

        dead = ws.jobs.get(victim.id)
        assert dead.status == RunStatus.FAILED
        assert dead.ended_at is not None
        assert "exited without reporting" in dead.error, dead.error
        assert ws.jobs.cancel(waiting.id, LEAD).status == RunStatus.CANCELED
    finally:
        backend.release(ws)


# --- reads and filters ----------------------------------------------------------------------

def test_unknown_run_is_not_found(demo):
    for call in (demo.jobs.get, demo.jobs.log, demo.jobs.metric_history):
        with pytest.raises(NotFound):
            call("run-that-never-was")


def test_list_is_newest_first_and_limit_takes_the_newest(demo, finished):
    runs = demo.jobs.list()
    created = [r.created_at for r in runs]
    assert created == sorted(created, reverse=True)
    assert [r.id for r in demo.jobs.list(RunFilter(limit=2))] == [r.id for r in runs[:2]]


def test_filter_by_experiment_status_and_dataset(demo, finished):
    ours = {r.id for r in finished["runs"].values()}
    assert {"diabetes-retrain", EXPERIMENT} <= set(demo.jobs.experiments())
    assert {r.id for r in demo.jobs.list(RunFilter(experiment=EXPERIMENT))} == ours
    assert len(demo.jobs.list(RunFilter(experiment="diabetes-retrain"))) == 5
    assert {r.id for r in demo.jobs.list(RunFilter(experiment=EXPERIMENT, status=(RunStatus.COMPLETED,)))} == ours
    assert demo.jobs.list(RunFilter(experiment=EXPERIMENT, status=(RunStatus.FAILED, RunStatus.CANCELED))) == []
    completed = demo.jobs.list(RunFilter(status=(RunStatus.COMPLETED,)))
    assert completed and all(r.status == RunStatus.COMPLETED for r in completed)
    assert ours <= {r.id for r in demo.jobs.list(RunFilter(dataset="diabetes"))}
    assert demo.jobs.list(RunFilter(dataset="no-such-data")) == []


def test_filter_by_creation_time_in_any_timezone(demo, finished):
    ours = {r.id for r in finished["runs"].values()}
    before, after = finished["before"], finished["after"]
    since = {r.id for r in demo.jobs.list(RunFilter(experiment=EXPERIMENT, since=before))}
    assert since == ours
    assert demo.jobs.list(RunFilter(experiment=EXPERIMENT, until=before)) == []
    assert {r.id for r in demo.jobs.list(RunFilter(since=before, until=after))} == ours
    assert demo.jobs.list(RunFilter(experiment=EXPERIMENT, since=after + timedelta(seconds=1))) == []

    tokyo = timezone(timedelta(hours=9))  # the same instants, written in another zone
    assert {r.id for r in demo.jobs.list(RunFilter(since=before.astimezone(tokyo),
                                                   until=after.astimezone(tokyo)))} == ours


DEMO = "diabetes-retrain"  # the demo's five finished runs: other tests of this module add runs meanwhile


def _filters_over(runs) -> list[RunFilter]:
    """Metric and parameter filters whose answers the runs themselves decide (thresholds between values)."""
    rmse = sorted(r.metrics["rmse"] for r in runs if "rmse" in r.metrics)
    middle = (rmse[len(rmse) // 2 - 1] + rmse[len(rmse) // 2]) / 2
    ridge = [r for r in runs if r.estimator == "ridge"]
    alpha = ridge[0].params["alpha"]
    filters = [
        RunFilter(estimators=("ridge",)),
        RunFilter(estimators=("ridge", "gbr"), status=(RunStatus.COMPLETED,)),
        RunFilter(metrics=(parse_condition(f"rmse < {middle}")[1],)),
        RunFilter(metrics=(parse_condition(f"rmse >= {middle}")[1], parse_condition("r2 > 0")[1])),
        RunFilter(estimators=("ridge",), metrics=(parse_condition(f"rmse < {middle}")[1],)),
        RunFilter(params=(parse_condition(f"params.alpha = {alpha}")[1],)),
        RunFilter(params=(parse_condition(f"params.alpha != {alpha}")[1],)),
        RunFilter(metrics=(parse_condition("no_such_metric > 0")[1],)),
        RunFilter(params=(parse_condition("params.alpha = 'a text'")[1],)),
    ]
    return [replace(f, experiment=DEMO) for f in filters]


def test_filter_by_estimator_metric_and_parameter_is_what_the_conditions_say(backend, demo):
    if backend.name == "azure":
        pytest.xfail("services/azure/jobs.py does not apply estimators/metrics/params/offset yet (issue 15)")
    runs = demo.jobs.list(RunFilter(experiment=DEMO))
    answers = []
    for flt in _filters_over(runs):
        got = [r.id for r in demo.jobs.list(flt)]
        assert got == [r.id for r in runs if matches(flt, r)], flt
        answers.append(len(got))
    assert answers[0] > 0 and answers[2] > 0 and answers[3] > 0  # the thresholds split the runs
    assert answers[7] == 0 and answers[8] == 0                     # a missing key, a text vs a number
    below = demo.jobs.list(RunFilter(experiment=DEMO, metrics=(parse_condition(f"rmse < {runs[0].metrics['rmse']}")[1],)))
    assert runs[0].id not in {r.id for r in below}                 # strictly less


def test_offset_pages_through_the_newest_first_list(backend, demo):
    if backend.name == "azure":
        pytest.xfail("services/azure/jobs.py does not apply estimators/metrics/params/offset yet (issue 15)")
    runs = [r.id for r in demo.jobs.list(RunFilter(experiment=DEMO))]
    pages = [[r.id for r in demo.jobs.list(RunFilter(experiment=DEMO, limit=2, offset=start))]
             for start in range(0, len(runs), 2)]
    assert sum(pages, []) == runs and len(pages) == 3
    assert [r.id for r in demo.jobs.list(RunFilter(experiment=DEMO, offset=2))] == runs[2:]
    assert demo.jobs.list(RunFilter(experiment=DEMO, limit=3, offset=len(runs))) == []


@pytest.mark.parametrize("text", ["rmse ~ 3", "rmse <", "params.alpha > 'text'", 'a"b = 1', "rmse < nan"])
def test_a_malformed_condition_is_invalid_input(text):
    with pytest.raises(InvalidInput):
        parse_condition(text)


def test_a_condition_with_an_unknown_operator_is_refused_by_the_store(backend, demo):
    if backend.name == "azure":
        pytest.xfail("services/azure/jobs.py does not apply estimators/metrics/params/offset yet (issue 15)")
    with pytest.raises(InvalidInput):
        demo.jobs.list(RunFilter(metrics=(Condition("rmse", "< 1 OR 1 =", 1.0),)))
