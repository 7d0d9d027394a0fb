"""Listings on what real workspaces (and the REST API examples) return: one job the SDK cannot
parse is skipped and named, the rest listed; a page that fails after the first keeps the pages
read, marked partial; a ``nextLink`` that leads nowhere (the examples' placeholder ``"string"``)
does the same; pipeline steps get their times and errors from run history."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.azure.replay import Reply
from services.azure.replay.fixtures import FIXTURE_SETS
from services.azure.workspace import open_azure
from services.errors import BackendUnavailable
from services.telemetry import warning_of
from tests.pages.helpers import as_read
from tests.azure.conftest import console_on

REAL = FIXTURE_SETS["real"]
APP = str(Path(__file__).resolve().parents[2] / "app.py")
JOBS = r"/workspaces/[^/]+/jobs$"


def recorded_jobs() -> list[dict]:
    return json.loads((REAL / "arm" / "jobs.json").read_text())["resources"]


def placeholder_job() -> dict:
    """The recorded command job with the REST API examples' placeholder job type."""
    job = copy.deepcopy(recorded_jobs()[0])
    job["id"] = job["id"].replace("test_334734506738", "example_job")
    job["name"], job["properties"]["jobType"] = "example_job", "string"
    return job


@pytest.fixture
def ws():
    workspace = open_azure("azure+replay://real")
    yield workspace
    workspace.close()


def test_a_job_the_sdk_cannot_parse_is_skipped_and_named(ws):
    ws.replay.arm.put_raw(placeholder_job()["id"], placeholder_job())
    runs = ws.jobs.list()
    assert sorted(r.id for r in runs) == ["test_334734506738", "test_680454434153"]
    assert "1 of the jobs could not be read" in warning_of(runs) and "example_job" in warning_of(runs)
    assert "Unsupported job type" in warning_of(runs)


def test_a_later_page_failing_keeps_the_pages_read(ws):
    ws.replay.arm.page_size = 1

    def jobs(req):
        if "$skip" in req.query:
            return Reply(503, {"error": {"code": "ServiceUnavailable", "message": "the second page is unavailable"}})
        return ws.replay.arm.handle(req)
    ws.replay.add("GET", JOBS, jobs)
    runs = ws.jobs.list()
    assert len(runs) == 1 and "listing the jobs stopped after 1" in warning_of(runs)
    assert "the second page is unavailable" in warning_of(runs)


def test_the_first_page_failing_is_an_error_with_a_hint(ws):
    ws.replay.add("GET", JOBS, Reply(503, {"error": {"code": "ServiceUnavailable", "message": "down"}}))
    with pytest.raises(BackendUnavailable) as e:
        ws.jobs.list()
    assert "down" in str(e.value) and e.value.hint


def test_a_placeholder_next_link_keeps_the_first_page(ws):
    first = recorded_jobs()[0]
    ws.replay.add("GET", JOBS, {"value": [first], "nextLink": "string"})
    runs = ws.jobs.list()
    assert [r.id for r in runs] == [first["name"]] and "listing the jobs stopped after 1" in warning_of(runs)


def test_pipeline_steps_take_times_and_errors_from_run_history(ws):
    history = json.loads((REAL / "history.json").read_text())["runs"]
    steps = {s.display_name: s for s in ws.jobs.steps("test_680454434153")}
    assert set(steps) == {r["displayName"] for r in history}
    for raw in history:  # lastStartTimeUtc and effectiveStartTimeUtc are null: startTimeUtc is the start
        step = steps[raw["displayName"]]
        assert step.started_at.isoformat().startswith(raw["startTimeUtc"][:19])
        assert step.ended_at.isoformat().startswith(raw["endTimeUtc"][:19]) and step.ended_at >= step.started_at
        assert step.error.splitlines()[0] == raw["error"]["error"]["message"].strip().splitlines()[0]


@pytest.fixture
def real_copy(tmp_path, monkeypatch):
    """A copy of the real fixtures the console is pointed at (a test may change it first)."""
    folder = tmp_path / "real"
    shutil.copytree(REAL, folder)
    with console_on(monkeypatch, f"azure+replay://{folder}"):
        yield folder


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180)
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception and not [e for e in at.error if e.icon == "🚫"]
    return at


def test_runs_page_names_the_skipped_job_and_shows_the_rest(real_copy):
    data = json.loads((real_copy / "arm" / "jobs.json").read_text())
    data["resources"].append(placeholder_job())
    (real_copy / "arm" / "jobs.json").write_text(json.dumps(data))
    at = open_page("runs")
    assert any("example_job" in as_read(w.value) for w in at.warning), [w.value for w in at.warning]
    shown = "\n".join(df.value.to_string() for df in at.dataframe)
    assert "test_dataset_display_name1" in shown or "test_334734506738" in shown


def rest_example(name: str) -> dict:
    """A REST API example, verbatim (tests/azure/rest_examples/README.md)."""
    return json.loads((Path(__file__).parent / "rest_examples" / name).read_text())["responses"]["200"]["body"]


def test_the_rest_examples_placeholders_give_a_clear_partial_result(ws):
    """``Workspace/DataVersionBase/list.json`` as the versions of one dataset: its ``"id": "string"``
    is no ARM id (the SDK raises); that dataset is named in the warning, the others are listed."""
    ws.replay.add("GET", r"/data/test_777353693968/versions$", rest_example("DataVersionBase-list.json"))
    versions = ws.datasets.all_versions()
    assert [v.ref for v in versions] == ["test_60801715751:1"]
    assert "test_777353693968" in warning_of(versions) and "Invalid ARM Id" in warning_of(versions)


def test_the_datasets_page_shows_the_rest_examples_partial_result(real_copy):
    from ui import state
    # the app's workspace (st.cache_resource, shared with AppTest), answered with the example before any read
    state._workspace(f"azure+replay://{real_copy}").replay.add("GET", r"/data/test_777353693968/versions$",
                                                                rest_example("DataVersionBase-list.json"))
    at = open_page("datasets")
    assert any("test_777353693968" in as_read(w.value) for w in at.warning), [w.value for w in at.warning]
