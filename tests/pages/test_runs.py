"""The Runs page: table and filters, one run's details, comparison, retraining, cancel."""
from __future__ import annotations

import base64
import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from sklearn.datasets import load_diabetes
from streamlit.testing.v1 import AppTest

from services.demo import DEMO_USER
from services.entities import RunFilter, RunStatus, TrainingSpec
from ui import runs_compare
from services.local.workspace import LocalWorkspace
from tests.contract.helpers import SLOW, allowing_slow
from tests.pages.helpers import as_read
from ui import runs_view as view
from ui import state

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LEAD = "lead@contoso.com"  # [roles] of tollgate.toml: training needs ml_lead, qa or admin


@pytest.fixture(autouse=True)
def fresh_reads():
    """The tests also write through ``demo_ws`` directly: no stale cached reads."""
    st.cache_data.clear()
    yield


@pytest.fixture(scope="module")
def failed_run(demo_ws, tmp_path_factory):
    """A run that fails at validation: its dataset has too many missing values."""
    frame = demo_ws.datasets.load("diabetes", 1).head(100).copy()
    frame.loc[:19, "bmi"] = None
    path = tmp_path_factory.mktemp("broken") / "broken.csv"
    frame.to_csv(path, index=False)
    demo_ws.datasets.register("broken", path, description="20 % of bmi missing", actor=LEAD)
    run = demo_ws.jobs.submit(TrainingSpec(dataset="broken", dataset_version=1, estimator="ridge"), LEAD)
    run = demo_ws.jobs.wait(run.id, timeout_s=120)
    assert run.status == RunStatus.FAILED
    return run


def demo_run(runs, estimator: str):
    """A run of the seeded demo (other tests of this module add runs of their own)."""
    return next(r for r in runs if r.estimator == estimator and r.created_by == DEMO_USER)


def runs_page(query: dict | None = None, actor: str = LEAD) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[state.ACTOR] = actor
    at.run()
    at.query_params.update(query or {})
    at.switch_page("pages/runs.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def table(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "estimator" in d.value.columns and "id" in d.value.columns)


def pick(at: AppTest, *run_ids: str) -> AppTest:
    at.multiselect(key=view.PICK).set_value(list(run_ids)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return as_read("\n".join(str(e.value) for kind in ("markdown", "caption", "info", "success", "warning", "error")
                             for e in getattr(at, kind)))


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def array(value) -> list:
    """A data array of a plotly JSON spec (plotly 6+ sends numbers base64-encoded)."""
    if isinstance(value, dict) and "bdata" in value:
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def test_lists_the_demo_runs_newest_first(demo_env, demo_ws):
    runs = demo_ws.jobs.list()
    at = runs_page()
    shown = table(at)
    assert shown["id"].tolist() == [r.id for r in runs]
    by_id = shown.set_index("id")
    gbr = demo_run(runs, "gbr")
    assert by_id.loc[gbr.id, "rmse"] == pytest.approx(gbr.metrics["rmse"])
    assert by_id.loc[gbr.id, "status"] == "✅ completed"
    assert by_id.loc[gbr.id, "model"] == f"{gbr.model_name}:{gbr.model_version}"
    metrics = {m.label: m.value for m in at.metric}
    completed = sum(r.status == RunStatus.COMPLETED for r in runs)
    assert metrics["✅ completed"] == str(completed)
    assert metrics["Runs"] == str(len(runs))
    assert not at.get("plotly_chart")  # nothing selected: no details yet


def test_status_and_estimator_filters_narrow_the_table(demo_env, demo_ws, failed_run):
    at = runs_page()
    assert failed_run.id in table(at)["id"].tolist()

    at.multiselect(key="runs.f.status").set_value([RunStatus.FAILED]).run()
    assert table(at)["id"].tolist() == [failed_run.id]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["❌ failed"] == "1" and metrics["✅ completed"] != "0"  # counts stay per status

    at.multiselect(key="runs.f.status").set_value([]).run()
    at.multiselect(key="runs.f.estimator").set_value(["ridge"]).run()
    ridge = [r.id for r in demo_ws.jobs.list() if r.estimator == "ridge"]
    assert sorted(table(at)["id"]) == sorted(ridge) and len(ridge) < len(demo_ws.jobs.list())

    at.multiselect(key="runs.f.estimator").set_value(["ridge"]).run()
    at.multiselect(key="runs.f.status").set_value([RunStatus.CANCELED]).run()
    assert "No runs match these filters" in texts(at)


def test_metric_and_parameter_conditions_narrow_the_table(demo_env, demo_ws, failed_run):
    runs = demo_ws.jobs.list()
    rmse = sorted(r.metrics["rmse"] for r in runs if "rmse" in r.metrics)
    cut = (rmse[1] + rmse[2]) / 2  # the two best runs
    at = runs_page()
    at.text_input(key="runs.f.conditions").set_value(f"rmse < {cut}").run()
    assert sorted(table(at)["id"]) == sorted(r.id for r in runs if r.metrics.get("rmse", 1e9) < cut)
    assert len(table(at)) == 2
    ridge = next(r for r in runs if r.estimator == "ridge")
    at.text_input(key="runs.f.conditions").set_value(f"params.alpha = {ridge.params['alpha']}").run()
    assert ridge.id in table(at)["id"].tolist()
    assert all(r.params.get("alpha") == ridge.params["alpha"] for r in runs if r.id in set(table(at)["id"]))
    at.text_input(key="runs.f.conditions").set_value("rmse ~ 3").run()
    assert any("not a condition" in str(e.value) for e in at.error)  # said, and the table is unfiltered
    assert failed_run.id in table(at)["id"].tolist()


def test_all_runs_come_a_page_at_a_time(demo_env, demo_ws, failed_run, monkeypatch):
    monkeypatch.setattr(view, "PAGE_SIZE", 2)
    runs = [r.id for r in demo_ws.jobs.list()]
    at = runs_page()
    at.selectbox(key="runs.f.window").set_value(0).run()
    assert table(at)["id"].tolist() == runs[:2]
    at.button(key="runs.page.older").click().run()
    assert table(at)["id"].tolist() == runs[2:4]
    at.button(key="runs.page.newer").click().run()
    assert table(at)["id"].tolist() == runs[:2]
    at.button(key="runs.page.older").click().run()
    at.multiselect(key="runs.f.estimator").set_value(["ridge"]).run()  # other filters: the newest page again
    assert table(at)["id"].tolist() == [r for r in runs if r in {x.id for x in demo_ws.jobs.list() if x.estimator == "ridge"}][:2]


def test_date_and_dataset_filters_go_to_the_service(demo_env, demo_ws, failed_run):
    at = runs_page()
    at.date_input(key="runs.f.created").set_value((date(2020, 1, 1), date(2020, 12, 31))).run()
    assert "No runs match these filters" in texts(at)
    at.date_input(key="runs.f.created").set_value(()).run()
    at.selectbox(key="runs.f.dataset").set_value("broken").run()
    assert table(at)["id"].tolist() == [failed_run.id]


def test_one_selected_run_shows_details_chart_and_log(demo_env, demo_ws):
    gbr = demo_run(demo_ws.jobs.list(), "gbr")
    at = pick(runs_page(), gbr.id)
    assert as_read(at.subheader[0].value).endswith(gbr.display_name)
    page = texts(at)
    assert f"registered as **{gbr.model_name}:{gbr.model_version}**" in page
    assert "**Passed**" in page and gbr.gate.champion in page
    # lineage: links to the dataset version and to the registered model version
    links = {link.proto.page: link.proto.query_string for link in at.get("page_link")}
    assert links["datasets"] == f"dataset={gbr.dataset}&version={gbr.dataset_version}"
    assert links["models"] == f"model={gbr.model_name}&version={gbr.model_version}"
    # the gate's checks, one row per metric, with their reasons
    checks = next(d.value for d in at.dataframe if "reason" in d.value.columns)
    assert checks["metric"].tolist() == [c.metric for c in gbr.gate.checks]
    # the metric history: val_rmse per boosting stage
    val = next(s for s in chart_specs(at) if s["layout"]["title"]["text"] == "val_rmse")
    assert val["layout"]["xaxis"]["title"]["text"] == "boosting stage"
    history = demo_ws.jobs.metric_history(gbr.id, "val_rmse")
    assert array(val["data"][0]["x"]) == [p.step for p in history]
    assert array(val["data"][0]["y"]) == pytest.approx([p.value for p in history])
    # the log, with the tail size choice
    assert gbr.id in at.code[0].value and "completed" in at.code[0].value
    at.radio(key="runs.log_tail").set_value(0).run()
    assert at.code[0].value == demo_ws.jobs.log(gbr.id).rstrip("\n")
    # the table ticks the same row
    rows = at.session_state[view.TABLE]["selection"]["rows"]
    assert [table(at)["id"][r] for r in rows] == [gbr.id]


def test_a_failed_run_shows_its_reason_prominently(demo_env, failed_run):
    at = pick(runs_page(), failed_run.id)
    assert "Failed during" in at.error[0].value and "missing" in at.error[0].value
    assert failed_run.error in as_read(at.error[0].value)


def test_a_link_naming_runs_selects_them_and_the_url_follows_the_selection(demo_env, demo_ws):
    lasso, gbr = (demo_run(demo_ws.jobs.list(), e) for e in ("lasso", "gbr"))
    at = runs_page({"run": lasso.id})  # as the Models page links to the run that trained a version
    assert at.multiselect(key=view.PICK).value == [lasso.id]
    assert as_read(at.subheader[0].value).endswith(lasso.display_name)
    pick(at, lasso.id, gbr.id)
    assert at.query_params["run"] == [lasso.id, gbr.id]
    pick(at)
    assert "run" not in at.query_params
    assert runs_page({"run": "run-that-does-not-exist"}).multiselect(key=view.PICK).value == []


def test_two_selected_runs_are_compared(demo_env, demo_ws):
    runs = [r for r in demo_ws.jobs.list() if r.estimator in ("ridge", "gbr") and r.created_by == DEMO_USER]
    at = pick(runs_page(), *[r.id for r in runs])
    assert at.subheader[0].value == f"Comparing {len(runs)} runs"
    compared = next(d.value for d in at.dataframe if "metric · rmse" in d.value.index)
    assert list(compared.columns) == [view.run_label(r) for r in runs]
    assert compared.loc["metric · rmse"].tolist() == [f"{r.metrics['rmse']:.5g}" for r in runs]
    kinds = [s["data"][0]["type"] for s in chart_specs(at)]
    assert "parcoords" in kinds and "scatter" in kinds
    parcoords = next(s for s in chart_specs(at) if s["data"][0]["type"] == "parcoords")
    assert {"estimator", "rmse", "mae", "r2"} <= {d["label"] for d in parcoords["data"][0]["dimensions"]}
    at.selectbox(key="runs.scatter_x").set_value("mae").run()
    scatter = next(s for s in chart_specs(at) if s["data"][0]["type"] == "scatter")
    assert scatter["layout"]["xaxis"]["title"]["text"] == "mae"


def test_comparison_marks_differences_and_the_best_value(demo_ws):
    runs = [r for r in demo_ws.jobs.list() if r.status == RunStatus.COMPLETED][:3]
    frame = runs_compare.comparison_frame(runs)
    best = runs_compare.best_runs(runs, demo_ws.policy)
    lowest = min(runs, key=lambda r: r.metrics["rmse"])
    highest_r2 = max(runs, key=lambda r: r.metrics["r2"])
    assert best["metric · rmse"] == view.run_label(lowest)
    assert best["metric · r2"] == view.run_label(highest_r2)
    html = runs_compare.styled_comparison(frame, best).to_html()
    assert "#fff8c5" in html  # differing rows are highlighted


def test_invalid_parameter_shows_an_error_and_starts_nothing(demo_env, demo_ws):
    before = len(demo_ws.jobs.list())
    at = runs_page()
    at.selectbox(key="runs.new.estimator").set_value("ridge").run()
    at.number_input(key="runs.new.ridge.alpha").set_value(-1.0)
    at.button(key="runs.new.ridge.submit").click().run()
    assert not at.exception
    assert any("must not be negative" in e.value for e in at.error)
    assert len(demo_ws.jobs.list()) == before
    assert view.WATCH not in at.session_state


def test_retraining_run_starts_is_watched_and_completes(demo_env, demo_ws):
    at = runs_page()
    at.selectbox(key="runs.new.dataset").set_value("diabetes:2").run()
    at.selectbox(key="runs.new.estimator").set_value("ridge").run()
    at.number_input(key="runs.new.ridge.alpha").set_value(0.5)
    at.text_input(key="runs.new.ridge.experiment").set_value("ui-test")
    at.button(key="runs.new.ridge.submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    run_id = at.session_state[view.WATCH]
    run = demo_ws.jobs.get(run_id)
    assert run.params["alpha"] == 0.5 and run.experiment == "ui-test" and run.dataset_version == 2
    assert run.created_by == LEAD and run.display_name == "ridge alpha=0.5"
    if not run.status.is_terminal:  # the live view: progress and the log tail
        assert at.get("progress")

    ended = demo_ws.jobs.wait(run_id, timeout_s=120)
    assert ended.status == RunStatus.COMPLETED, ended.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.get("progress")  # no longer polling
    outcome = texts(at)
    assert "Completed in" in outcome
    assert run_id in table(at)["id"].tolist()  # the table was refreshed
    assert any(m.label == "rmse" and m.value == f"{ended.metrics['rmse']:.5g}" for m in at.metric)

    at.button(key="runs.watch_show").click().run()
    assert as_read(at.subheader[0].value).endswith("ridge alpha=0.5")
    at.button(key="runs.watch_dismiss").click().run()
    assert view.WATCH not in at.session_state


def test_a_running_run_can_be_canceled_after_confirming(demo_env, demo_ws):
    slow = LocalWorkspace(demo_ws.root, policy=allowing_slow(demo_ws.policy))   # beyond [training.bounds]
    run = slow.jobs.submit(TrainingSpec(dataset="diabetes", experiment="ui-test", **SLOW), LEAD)
    slow.close()
    try:
        at = runs_page()
        at.session_state[view.WATCH] = run.id
        at.run()
        at.button(key="runs.cancel.watch").click().run()
        assert "This cannot be undone" in texts(at)
        assert not demo_ws.jobs.get(run.id).status.is_terminal  # nothing happens before confirming
        at.button(key="runs.cancel_yes.watch").click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert demo_ws.jobs.get(run.id).status == RunStatus.CANCELED
        assert "Canceled" in texts(at)
    finally:
        if not demo_ws.jobs.get(run.id).status.is_terminal:
            demo_ws.jobs.cancel(run.id, LEAD)


def test_empty_workspace_says_what_to_do(empty_ws, monkeypatch, tmp_path):
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{empty_ws.root}")
    at = runs_page()
    assert "no data to train on" in texts(at)
    assert not at.dataframe and not at.multiselect  # no table, no filters to play with

    path = tmp_path / "diabetes.csv"
    load_diabetes(as_frame=True, scaled=False).frame.to_csv(path, index=False)
    empty_ws.datasets.register("diabetes", path, actor=LEAD)
    st.cache_data.clear()
    at = runs_page()
    assert "Start the first one below" in texts(at)
    assert at.selectbox(key="runs.new.dataset").value == "diabetes:1"  # the form is there, open
    assert at.expander[0].proto.expanded


def test_window_and_filters_build_the_service_query():
    flt = view.Filters(statuses=(RunStatus.FAILED,), experiment="x", window=500)
    assert flt.run_filter() == RunFilter(status=(RunStatus.FAILED,), experiment="x", limit=500)
    assert flt.run_filter(with_status=False).status == ()
    # every filter is the store's: the window is the store's limit, "all runs" a page of it
    metrics, params = view.parse_conditions("rmse < 55 and params.alpha = 1, r2 >= 0.4")
    assert [c.key for c in metrics] == ["rmse", "r2"] and [c.key for c in params] == ["alpha"]
    assert view.Filters(estimators=("gbr",), metrics=metrics, params=params, window=500).run_filter() == RunFilter(
        estimators=("gbr",), metrics=metrics, params=params, limit=500)
    assert view.Filters(window=0).run_filter() == RunFilter(limit=view.PAGE_SIZE)
    assert view.Filters(window=0, page=2).run_filter() == RunFilter(limit=view.PAGE_SIZE, offset=2 * view.PAGE_SIZE)


def test_a_run_shows_who_asked_its_code_version_and_environment(demo_env, demo_ws):
    gbr = demo_run(demo_ws.jobs.list(), "gbr")
    at = pick(runs_page(), gbr.id)
    shown = next(d.value for d in at.dataframe if list(d.value.columns) == ["", "value"])
    rows = dict(zip(shown[""], shown["value"]))
    assert rows["Requested by"] == gbr.provenance.requested_by == DEMO_USER
    assert rows["Code"].startswith(gbr.provenance.code_version)
    assert rows["Python"] == gbr.provenance.python
    assert f"scikit-learn {gbr.provenance.packages['scikit-learn']}" in rows["Packages"]
    [download] = [b for b in at.get("download_button") if "package list" in b.proto.label]


def test_comparison_of_different_estimators_has_their_hyperparameters_as_axes(demo_ws):
    runs = [r for r in demo_ws.jobs.list() if r.created_by == DEMO_USER]
    assert {r.estimator for r in runs} >= {"ridge", "gbr", "random_forest"}
    dims = {d["label"]: d for d in runs_compare.parallel_coordinates(runs).to_plotly_json()["data"][0]["dimensions"]}
    assert {"alpha", "n_estimators", "max_depth"} <= set(dims), "each estimator's own parameters"
    scored = [r for r in runs if r.metrics.get("rmse") is not None]
    alpha = dims["alpha"]
    assert "not set" in alpha["ticktext"]
    not_set = alpha["tickvals"][list(alpha["ticktext"]).index("not set")]
    for run, value in zip(scored, alpha["values"]):
        assert value == (run.params["alpha"] if "alpha" in run.params else not_set)


def test_a_scatter_says_which_runs_it_leaves_out_and_why(demo_env, demo_ws):
    runs = [r for r in demo_ws.jobs.list() if r.created_by == DEMO_USER]
    left_out = dict((r.id, why) for r, why in runs_compare.scatter_left_out(runs, "param · alpha", "rmse"))
    assert set(left_out) == {r.id for r in runs if "alpha" not in r.params}
    assert all(why == "no alpha parameter" for why in left_out.values())

    at = pick(runs_page(), *[r.id for r in runs])
    at.selectbox(key="runs.scatter_x").set_value("param · alpha").run()
    scatter = next(s for s in chart_specs(at) if s["data"][0]["type"] == "scatter")
    drawn = {i for trace in scatter["data"] for i in trace["hovertext"]}
    assert drawn == {r.display_name for r in runs if "alpha" in r.params}
    listed = next(d.value for d in at.dataframe if "why" in d.value.columns)
    assert sorted(listed["why"]) == sorted(left_out.values())
    assert any(f"Not drawn ({len(left_out)} of {len(runs)} runs)" in c.value for c in at.caption)


def test_the_retraining_form_defaults_to_the_latest_passing_version(demo_env, demo_ws, failed_run):
    at = runs_page()
    picker = at.selectbox(key="runs.new.dataset")
    assert "broken:1" in picker.options[0], "the newest dataset version is listed first"
    assert picker.value == "diabetes:2", "but the default is the latest passing one with labels"
    assert "(latest passing)" in picker.format_func("diabetes:2")
    assert "(latest passing)" not in picker.format_func("broken:1")
