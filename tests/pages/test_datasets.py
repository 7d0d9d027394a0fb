"""The Datasets page: versions table, one version's profile and tests, distribution, upload."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.proto.Block_pb2 import Block
from streamlit.testing.v1 import AppTest

from services.entities import CheckStatus, DataTestResult
from services.errors import InvalidInput
from tests.pages.helpers import as_read
from ui import datasets_view as dv_view
from ui import state

APP = str(Path(__file__).resolve().parents[2] / "app.py")
LEAD = "lead@contoso.com"  # [roles] of tollgate.toml: registering data needs ml_lead or admin


def datasets_page(actor: str = LEAD) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state[state.ACTOR] = actor
    at.run()
    at.switch_page("pages/datasets.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def versions_table(at: AppTest):
    return at.dataframe[0].value


def selectbox(at: AppTest, label: str):
    return next(s for s in at.selectbox if s.label == label and s.key != "datasets.upload_target")


def upload(at: AppTest, filename: str, data: bytes, dataset: str = "diabetes") -> AppTest:
    at.selectbox(key="datasets.upload_target").select(dataset).run()
    at.file_uploader[0].set_value((filename, data, "text/csv"))
    at.run()
    at.button(key="datasets.upload_submit").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def tab_default(node) -> int | None:
    """The index of the tab a page opens on (the first tab container under ``node``)."""
    proto = getattr(node, "proto", None)
    if isinstance(proto, Block) and proto.WhichOneof("type") == "tab_container":
        return proto.tab_container.default_tab_index
    for child in getattr(node, "children", {}).values():
        found = tab_default(child)
        if found is not None:
            return found
    return None


def alerts(at: AppTest, kind: str) -> str:
    return as_read("\n".join(a.value for a in getattr(at, kind)))


@pytest.fixture
def v2_csv(demo_ws) -> bytes:
    return demo_ws.datasets.load("diabetes", 2).to_csv(index=False).encode()


def test_lists_versions_and_shows_the_latest(demo_env, demo_ws):
    at = datasets_page()
    table = versions_table(at)
    assert len(table) >= 2
    assert set(table["dataset"]) == {"diabetes"}
    latest = demo_ws.datasets.get("diabetes")
    assert selectbox(at, "Version").value == latest.version
    assert any(s.value == latest.ref for s in at.subheader)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows"] == f"{latest.rows:,}"
    assert metrics["Baseline"] == f"v{latest.baseline_version}"
    tests_table = at.dataframe[1].value
    assert len(tests_table) == len(demo_ws.datasets.data_tests("diabetes", latest.version))
    assert any("checks passed against baseline" in s.value for s in at.success)
    assert len(at.get("plotly_chart")) == 1  # the distribution against the baseline


def test_selecting_a_version_changes_what_is_shown(demo_env, demo_ws):
    at = datasets_page()
    selectbox(at, "Version").select(1).run()
    assert not at.exception
    assert any(s.value == "diabetes:1" for s in at.subheader)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rows"] == f"{demo_ws.datasets.get('diabetes', 1).rows:,}"
    assert metrics["Baseline"] == "none"
    assert any("first version" in s.value for s in at.success)


def test_uploading_a_good_csv_registers_the_next_version(demo_env, demo_ws, v2_csv):
    before = len(demo_ws.datasets.versions("diabetes"))
    at = upload(datasets_page(), "diabetes-more.csv", v2_csv)
    versions = demo_ws.datasets.versions("diabetes")
    assert len(versions) == before + 1
    new = versions[0]
    assert new.source == "diabetes-more.csv" and new.created_by == LEAD
    assert any(f"Registered **{new.ref}**" in s.value for s in [*at.success, *at.warning])
    assert len(versions_table(at)) == before + 1
    assert selectbox(at, "Version").value == new.version  # the new version is selected


@pytest.mark.parametrize("breakage, check, column", [
    ("drop bmi", "schema", "bmi"),
    ("text in bp", "type", "bp"),
])
def test_uploading_a_broken_csv_names_the_failing_check_and_column(demo_env, demo_ws, breakage, check, column):
    frame = demo_ws.datasets.load("diabetes", 1)
    if breakage == "drop bmi":
        frame = frame.drop(columns=["bmi"])
    else:
        frame["bp"] = frame["bp"].astype(object)
        frame.loc[3, "bp"] = "high"
    before = len(demo_ws.datasets.versions("diabetes"))
    at = upload(datasets_page(), "broken.csv", frame.to_csv(index=False).encode())
    new = demo_ws.datasets.versions("diabetes")[0]
    assert new.version == before + 1 and new.tests_status == CheckStatus.FAIL  # registered, but failing
    errors = alerts(at, "error")
    assert f"{check} [{column}]" in errors
    assert "training on it will fail" in errors
    failing_first = at.dataframe[1].value.iloc[0]
    assert failing_first["status"].endswith("fail")


def test_a_malformed_csv_shows_an_error_and_registers_nothing(demo_env, demo_ws):
    before = len(demo_ws.datasets.versions("diabetes"))
    at = upload(datasets_page(), "malformed.csv", b"age,bmi\n1,2\n3,4,5,6\n7,8\n")
    errors = alerts(at, "error")
    assert "malformed.csv" in errors and "What to do" in errors  # the reason and the hint
    assert any(c.value == "Nothing was registered." for c in at.caption)
    assert len(demo_ws.datasets.versions("diabetes")) == before


def test_upload_to_a_new_dataset_name(demo_env, demo_ws, v2_csv):
    at = datasets_page()
    at.selectbox(key="datasets.upload_target").select(dv_view.NEW_DATASET).run()
    at.text_input(key="datasets.upload_new_name").input("diabetes-eu").run()
    at.file_uploader[0].set_value(("eu.csv", v2_csv, "text/csv"))
    at.run()
    at.button(key="datasets.upload_submit").click().run()
    assert not at.exception
    new = demo_ws.datasets.get("diabetes-eu")
    assert new.version == 1 and new.baseline_version is None
    assert selectbox(at, "Dataset").value == "diabetes-eu"


def test_register_upload_refuses_a_bad_file_type(demo_ws):
    with pytest.raises(InvalidInput):
        dv_view.register_upload(demo_ws, "diabetes", "notes.txt", b"hello", "", LEAD)


def test_verdict_lists_failures_by_check_with_their_columns():
    tests = [
        DataTestResult("rows", None, CheckStatus.PASS, "500 rows"),
        DataTestResult("psi", "age", CheckStatus.WARN, "PSI 0.2"),
        DataTestResult("schema", "bmi", CheckStatus.FAIL, "missing"),
        DataTestResult("type", "bp", CheckStatus.FAIL, "not numeric"),
    ]
    status, line = dv_view.verdict(tests, 1)
    assert status == CheckStatus.FAIL
    assert line == "2 checks failed: schema [bmi], type [bp]; 1 warning: psi [age]"
    assert [t.status for t in dv_view.failures_first(tests)] == [CheckStatus.FAIL, CheckStatus.FAIL,
                                                                 CheckStatus.WARN, CheckStatus.PASS]
    assert dv_view.verdict(tests[:1], None)[0] == CheckStatus.PASS


def test_empty_workspace_explains_what_to_do(empty_ws, monkeypatch):
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{empty_ws.root}")
    at = datasets_page()
    assert any("No datasets yet" in i.value for i in at.info)
    assert len(at.file_uploader) == 1


def test_a_link_selects_the_dataset_version(demo_env):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params["dataset"] = "diabetes"
    at.query_params["version"] = "1"
    at.switch_page("pages/datasets.py").run()
    assert not at.exception
    assert any(h.value == "diabetes:1" for h in at.subheader)


# --- checking a file, the latest passing version, links to a check's figures ---------------

def test_check_this_file_shows_its_tests_and_registers_nothing(demo_env, demo_ws):
    before = [v.ref for v in demo_ws.datasets.all_versions()]
    frame = demo_ws.datasets.load("diabetes", 2)
    frame["bmi"] = frame["bmi"] + 3 * frame["bmi"].std()
    at = datasets_page()
    at.selectbox(key="datasets.upload_target").select("diabetes").run()
    at.file_uploader[0].set_value(("shifted *bold*.csv", frame.to_csv(index=False).encode(), "text/csv"))
    at.run()
    at.button(key="datasets.upload_check").click().run()
    assert not at.exception, [e.value for e in at.exception]
    baseline = demo_ws.datasets.latest_passing("diabetes").version
    message = alerts(at, "error")
    assert "as the next version of **diabetes**" in message and "Nothing was registered" in message
    assert f"against diabetes:{baseline}, the latest passing version" in message
    assert "shift_mean [bmi" in message
    assert any(t.value == "File: shifted *bold*.csv" for t in at.text), "the file name as plain text"
    checked = next(d.value for d in at.dataframe if "what it checks" in d.value.columns and
                   ((d.value["check"] == "shift_mean") & (d.value["column"] == "bmi")).any())
    row = checked[(checked["check"] == "shift_mean") & (checked["column"] == "bmi")].iloc[0]
    assert "❌" in row["status"] and "σ" in row["what it checks"]
    assert [v.ref for v in demo_ws.datasets.all_versions()] == before


def test_a_failing_version_is_listed_but_not_the_default(demo_template, tmp_path, monkeypatch):
    from services.local.workspace import LocalWorkspace
    from tests.conftest import copy_workspace
    root = copy_workspace(demo_template, tmp_path / "ws")
    ws = LocalWorkspace(root)
    broken = ws.datasets.load("diabetes", 2).drop(columns=["age"])
    path = tmp_path / "no-age.csv"
    broken.to_csv(path, index=False)
    assert ws.datasets.register("diabetes", path, actor=LEAD).tests_status == CheckStatus.FAIL
    ws.close()
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{root}")
    at = datasets_page()
    picker = selectbox(at, "Version")
    assert picker.value == 2, "the latest passing version, not the failing v3"
    assert "latest passing" in picker.format_func(2)
    assert "failed: not used by default" in picker.format_func(3)
    assert any(h.value == "diabetes:2" for h in at.subheader)


def test_a_link_to_a_column_opens_its_distribution(demo_env):
    at = AppTest.from_file(APP, default_timeout=60)
    at.query_params.update({"dataset": "diabetes", "version": "2", "column": "s3"})
    at.switch_page("pages/datasets.py").run()
    assert not at.exception
    column = next(s for s in at.selectbox if s.label == "Column")
    assert column.value == "s3"
    assert [t.label for t in at.tabs][tab_default(at.main)] == "Distribution"


def test_the_upload_panel_stays_open_after_a_registration_and_another_file(demo_env, demo_ws, v2_csv):
    at = upload(datasets_page(), "again.csv", v2_csv)
    assert at.session_state[dv_view.UPLOAD_OPEN] is True
    at.file_uploader[0].set_value(("second.csv", v2_csv, "text/csv"))
    at.run()
    assert not at.exception
    assert at.session_state[dv_view.UPLOAD_OPEN] is True, "attaching a second file keeps the panel open"
    assert at.expander[0].proto.expanded
