"""From the review (the Releases page's evidence), each data check that did not pass links to its
figures on the Datasets page, which opens on that dataset version and column."""
from __future__ import annotations

import sqlite3
from urllib.parse import parse_qsl

import pytest
import streamlit as st

from services.entities import CheckStatus
from services.local.workspace import LocalWorkspace
from tests.conftest import copy_workspace
from tests.pages.helpers import open_page
from ui import datasets_view as dv_view

LEAD = "lead@contoso.com"
MODEL = "diabetes-regressor"


@pytest.fixture
def warned_env(demo_template, tmp_path, monkeypatch):
    """diabetes:3 with one empty bmi cell (the ``missing`` check warns), and model v5 trained on it
    (its lineage set in the registry: training takes a minute, what the page reads is the lineage)."""
    root = copy_workspace(demo_template, tmp_path / "ws")
    ws = LocalWorkspace(root)
    try:
        frame = ws.datasets.load("diabetes", 2)
        frame.loc[0, "bmi"] = None
        frame.to_csv(tmp_path / "one-gap.csv", index=False)
        dv = ws.datasets.register("diabetes", tmp_path / "one-gap.csv", actor=LEAD)
    finally:
        ws.close()
    db = sqlite3.connect(root / "tollgate.db")
    db.execute("UPDATE models SET dataset_version = ? WHERE name = ? AND version = 5", (dv.version, MODEL))
    db.commit()
    db.close()
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{root}")
    st.cache_data.clear()
    st.cache_resource.clear()
    yield dv
    st.cache_resource.clear()


def test_checks_group_by_the_column_their_figure_is_about():
    from services.entities import DataTestResult as T
    tests = [T("rows", None, CheckStatus.PASS, "442 rows"), T("psi", "bmi", CheckStatus.WARN, "PSI 0.12"),
             T("schema", None, CheckStatus.FAIL, "bmi missing"), T("shift_mean", "bmi", CheckStatus.FAIL, "3.2σ"),
             T("range", "age", CheckStatus.WARN, "outside")]
    assert dv_view.checks_by_column(tests) == [(None, CheckStatus.FAIL, ["schema"]),
                                               ("bmi", CheckStatus.FAIL, ["shift_mean", "psi"]),
                                               ("age", CheckStatus.WARN, ["range"])]


def test_a_warning_in_the_review_links_to_its_column_on_the_datasets_page(warned_env):
    dv = warned_env
    assert dv.tests_status == CheckStatus.WARN
    at = open_page("pages/releases.py", LEAD)
    at.selectbox(key="releases.version").set_value(5).run()
    assert not at.exception, [e.value for e in at.exception]
    links = [link.proto for link in at.get("page_link") if link.proto.page == "datasets"]
    by_query = {link.query_string: link.label for link in links}
    column_link = f"dataset=diabetes&version={dv.version}&column=bmi"
    assert column_link in by_query and "missing" in by_query[column_link], by_query
    assert f"dataset=diabetes&version={dv.version}" in by_query                 # and the whole report

    # the link opens the Datasets page on that version, its figures on that column
    datasets = open_page("pages/datasets.py", LEAD, dict(parse_qsl(column_link)))
    assert datasets.selectbox(key="datasets.name").value == "diabetes"
    assert datasets.selectbox(key="datasets.version.diabetes").value == dv.version
    assert datasets.selectbox(key=f"datasets.column.{dv.ref}.bmi").value == "bmi"
    # under the figure: the check the link came from, with the others about that column
    about = [c.value for c in datasets.caption if c.value.startswith("⚠️ **missing**: 1 missing")]
    assert about and "**psi**" in about[0] and "**range**" in about[0], about
