"""The Models page: versions table, candidate vs champion, tags/description edits, archive/restore."""
from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from services.local.evaluation import LocalEvaluator
from tests.conftest import copy_workspace
from tests.pages.helpers import act, as_read, open_page
from ui import models_view as view
from ui.widgets import fmt_metric

NAME = "diabetes-regressor"
PICKER = view.selected_key(NAME)
LEAD = "lead@contoso.com"  # [roles] of tollgate.toml: tags, description and archive need ml_lead or admin


@pytest.fixture(autouse=True)
def fresh_reads():
    """Tests check and change state through ``demo_ws`` directly: no stale cached reads."""
    st.cache_data.clear()
    yield


def models_page(query: dict | None = None, actor: str = LEAD) -> AppTest:
    return open_page("pages/models.py", actor, query)


def review(at: AppTest, version: int) -> AppTest:
    at.selectbox(key=PICKER).set_value(version)
    return act(at)


def versions_table(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "aliases" in d.value.columns)


def comparison_table(at: AppTest) -> pd.DataFrame:
    return next(d.value for d in at.dataframe if "gate rule" in d.value.columns)


def texts(elements) -> str:
    return as_read("\n".join(e.value for e in elements))


# --- rendering ------------------------------------------------------------------------

def test_lists_the_versions_and_marks_the_champion(demo_env, demo_ws):
    at = models_page()
    table = versions_table(at)
    assert sorted(table["version"]) == sorted(v.version for v in demo_ws.models.versions(NAME))
    champion = demo_ws.models.champion(NAME)
    row = table[table["version"] == champion.version].iloc[0]
    assert list(row["aliases"]) == ["champion"]
    assert all(len(a) == 0 for a in table[table["version"] != champion.version]["aliases"])
    assert next(m.value for m in at.metric if m.label == "Champion") == f"v{champion.version}"
    assert not at.error


def test_defaults_to_the_newest_candidate_and_matches_the_service(demo_env, demo_ws):
    at = models_page()
    champion = demo_ws.models.champion(NAME)
    newest = next(v for v in demo_ws.models.versions(NAME) if not v.is_champion and not v.archived)
    assert at.selectbox(key=PICKER).value == newest.version
    expected = demo_ws.evaluation.compare(NAME, newest.version)

    markdown = texts(at.markdown)
    assert f"of `{expected.evaluated_on}`" in markdown and f"{len(expected.actual)} held-out rows" in markdown
    for metric, value in expected.candidate_metrics.items():
        tile = next(m for m in at.metric if m.label.startswith(f"{metric} ·"))
        assert tile.value == fmt_metric(value)
        assert tile.proto.delta_description == f"vs champion {fmt_metric(expected.champion_metrics[metric])}"
    table = comparison_table(at).set_index("metric")
    for metric, value in expected.candidate_metrics.items():
        assert table.loc[metric, "candidate"] == pytest.approx(value)
        assert table.loc[metric, "champion"] == pytest.approx(expected.champion_metrics[metric])
    for check in expected.gate.checks:
        assert table.loc[check.metric, "gate check"] == ("pass" if check.passed else "fail")

    banner = at.success if expected.gate.passed else at.error
    verdict = "PASS" if expected.gate.passed else "FAIL"
    assert f"Quality gate: {verdict}" in texts(banner)
    assert f"champion {champion.ref}" in texts(banner)
    assert len(at.get("plotly_chart")) == 2


def test_another_candidate_is_scored_on_its_own_dataset(demo_env, demo_ws):
    other = next(v for v in demo_ws.models.versions(NAME)
                 if not v.is_champion and v.dataset_version == 1)
    at = review(models_page(), other.version)
    expected = demo_ws.evaluation.compare(NAME, other.version)
    assert f"of `{expected.evaluated_on}`" in texts(at.markdown)
    table = comparison_table(at).set_index("metric")
    assert table.loc["rmse", "candidate"] == pytest.approx(expected.candidate_metrics["rmse"])
    assert table.loc["rmse", "champion"] == pytest.approx(expected.champion_metrics["rmse"])


def test_a_failing_gate_shows_fail_with_the_reasons(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "strict")
    (path / "tollgate.toml").write_text(
        '[gate]\nrequire_improvement = "rmse"\n'
        'rules = [{metric = "rmse", direction = "lower", max_regression = 0.0},\n'
        '         {metric = "r2", direction = "higher", max_regression = 0.0, min = 0.95}]\n')
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    at = models_page()
    banner = texts(at.error)
    assert "Quality gate: FAIL" in banner and "below the floor 0.95" in banner
    assert not at.success or "Quality gate" not in texts(at.success)
    assert comparison_table(at).set_index("metric").loc["r2", "gate check"] == "fail"


def test_reviewing_the_champion_says_so(demo_env, demo_ws):
    champion = demo_ws.models.champion(NAME)
    at = review(models_page(), champion.version)
    assert f"v{champion.version} is the champion" in texts(at.info)
    assert "Quality gate" not in texts(at.success) + texts(at.error)
    assert "champion" not in comparison_table(at).columns


def test_a_link_selects_the_version(demo_env):
    at = models_page({"model": NAME, "version": "3"})
    assert at.selectbox(key=PICKER).value == 3
    assert "Candidate v3 vs champion" in texts(at.subheader)


# --- edits ---------------------------------------------------------------------------

def test_tags_are_set_and_removed(demo_env, demo_ws):
    ref = f"{NAME}:2"
    at = review(models_page(), 2)
    at.text_input(key=f"models.tag_key.{ref}").input("reviewed_by")
    at.text_input(key=f"models.tag_value.{ref}").input("ml-lead@contoso.com")
    act(at.button(key=f"models.set_tag.{ref}").click())
    assert demo_ws.models.get(NAME, 2).tags["reviewed_by"] == "ml-lead@contoso.com"
    assert "Set tag" in texts(at.success)

    at.selectbox(key=f"models.remove_key.{ref}").set_value("reviewed_by")
    act(at.button(key=f"models.remove_tag.{ref}").click())
    assert "reviewed_by" not in demo_ws.models.get(NAME, 2).tags
    assert "Removed tag" in texts(at.success)


def test_description_is_saved(demo_env, demo_ws):
    at = review(models_page(), 2)
    box = next(t for t in at.text_area if t.label == "Description")
    box.input("Lasso on the new data; reviewed for bias.")
    act(at.button(key=f"models.save_description.{NAME}:2").click())
    assert demo_ws.models.get(NAME, 2).description == "Lasso on the new data; reviewed for bias."
    assert next(t for t in at.text_area if t.label == "Description").value == "Lasso on the new data; reviewed for bias."


def test_archive_hides_a_candidate_and_restore_brings_it_back(demo_env, demo_ws):
    at = review(models_page(), 3)
    act(at.button(key="models.archive").click())
    assert "hides it from the version list" in texts(at.markdown)  # the confirmation says what changes
    assert not demo_ws.models.get(NAME, 3).archived  # nothing happens before confirming
    act(at.button(key="models.archive.confirm").click())
    assert demo_ws.models.get(NAME, 3).archived
    assert 3 not in set(versions_table(at)["version"])
    assert 3 not in at.selectbox(key=PICKER).options and "Archived" in texts(at.success)

    act(at.toggle(key=view.SHOW_ARCHIVED).set_value(True))
    assert versions_table(at).set_index("version").loc[3, "archived"]
    act(review(at, 3).button(key="models.restore").click())
    assert not demo_ws.models.get(NAME, 3).archived
    act(at.toggle(key=view.SHOW_ARCHIVED).set_value(False))
    assert 3 in set(versions_table(at)["version"])


def test_archiving_the_champion_is_refused(demo_env, demo_ws):
    champion = demo_ws.models.champion(NAME)
    at = review(models_page(), champion.version)
    act(at.button(key="models.archive").click())
    act(at.button(key="models.archive.confirm").click())
    assert "cannot be archived" in texts(at.error)
    assert not demo_ws.models.get(NAME, champion.version).archived
    assert demo_ws.models.champion(NAME).version == champion.version


def test_cancel_closes_the_archive_dialog(demo_env, demo_ws):
    at = review(models_page(), 4)
    act(at.button(key="models.archive").click())
    act(at.button(key="models.archive.cancel").click())
    assert not any(b.key == "models.archive.confirm" for b in at.button)
    assert not demo_ws.models.get(NAME, 4).archived


# --- failures and edge cases -----------------------------------------------------------

def test_a_corrupt_model_file_shows_a_message(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "corrupt")
    (path / "models" / NAME / "5" / "model.pkl").write_bytes(b"\x80\x04 this is not a pickle" * 50)
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    at = models_page()
    assert at.selectbox(key=PICKER).value == 5
    assert "could not be loaded" in texts(at.error)
    assert any(t.label == "Description" for t in at.text_area)  # the card is still there


def test_an_empty_registry_explains_how_models_arrive(empty_ws, monkeypatch):
    monkeypatch.setenv("TOLLGATE_WORKSPACE", empty_ws.info.uri)
    at = models_page()
    assert "No model is registered yet" in texts(at.info)
    assert "passes the quality gate" in texts(at.info)


def test_no_champion_shows_the_candidate_alone(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "no-champion")
    with sqlite3.connect(path / "tollgate.db") as db:
        db.execute("DELETE FROM model_aliases")
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    at = models_page()
    assert "has no champion yet" in texts(at.info)
    assert "champion" not in comparison_table(at).columns
    assert next(m.value for m in at.metric if m.label == "Champion") == "none"


def test_two_thousand_versions_compare_only_the_selected_one(demo_template, tmp_path, monkeypatch):
    path = copy_workspace(demo_template, tmp_path / "many")
    with sqlite3.connect(path / "tollgate.db") as db:
        db.row_factory = sqlite3.Row
        latest = dict(db.execute("SELECT * FROM models WHERE name = ? ORDER BY version DESC LIMIT 1",
                                 (NAME,)).fetchone())
        columns = list(latest)
        rows = [tuple({**latest, "version": v, "archived": int(v % 7 == 0)}[c] for c in columns)
                for v in range(latest["version"] + 1, 2001)]
        db.executemany(f"INSERT INTO models ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    compared = []
    original = LocalEvaluator.compare
    monkeypatch.setattr(LocalEvaluator, "compare",
                        lambda self, *a, **k: compared.append(a) or original(self, *a, **k))

    visible = [v for v in range(1, 2001) if v <= latest["version"] or v % 7]
    at = models_page()
    assert compared == [(NAME, max(visible), demo_ws_champion(path))]
    assert len(versions_table(at)) == len(visible)
    act(at)  # a rerun with 2,000 versions still compares only the selected candidate (speed: bench/)
    assert len(compared) == 1


def demo_ws_champion(path: Path) -> int:
    with sqlite3.connect(path / "tollgate.db") as db:
        return db.execute("SELECT version FROM model_aliases WHERE name = ? AND alias = 'champion'",
                          (NAME,)).fetchone()[0]


# --- helpers ----------------------------------------------------------------------------

def test_default_candidate_skips_champion_and_archived(demo_ws):
    versions = demo_ws.models.versions(NAME)
    newest = versions[0]
    archived = [dataclasses.replace(newest, archived=True), *versions[1:]]
    assert view.default_candidate(view.versions_frame(archived, ["rmse"])) == versions[1].version
    only_champion = [v for v in versions if v.is_champion]
    assert view.default_candidate(view.versions_frame(only_champion, ["rmse"])) == only_champion[0].version
    assert view.default_candidate(view.versions_frame([], ["rmse"])) is None


def test_metric_deltas_follow_each_metrics_direction(demo_ws):
    comparison = demo_ws.evaluation.compare(NAME, 2)
    worse = dataclasses.replace(comparison, candidate_metrics={"rmse": 60.0, "mae": 40.0, "r2": 0.40},
                                champion_metrics={"rmse": 50.0, "mae": 40.0, "r2": 0.50})
    deltas = {d.metric: d for d in view.metric_deltas(worse, demo_ws.policy)}
    assert deltas["rmse"].verdict == "worse" and deltas["rmse"].delta == pytest.approx(10.0)
    assert deltas["rmse"].relative == pytest.approx(0.2)
    assert deltas["mae"].verdict == "equal"
    assert deltas["r2"].verdict == "worse" and deltas["r2"].relative == pytest.approx(-0.2)
    better = dataclasses.replace(worse, candidate_metrics={"rmse": 40.0, "mae": 30.0, "r2": 0.60})
    assert {d.verdict for d in view.metric_deltas(better, demo_ws.policy)} == {"better"}
    alone = view.metric_deltas(worse, demo_ws.policy, with_champion=False)
    assert all(d.champion is None and d.verdict is None for d in alone)


def test_a_version_shows_the_provenance_of_the_run_that_trained_it(demo_env, demo_ws):
    mv = demo_ws.models.get(NAME, 3)
    at = review(models_page(), 3)
    shown = next(d.value for d in at.dataframe if list(d.value.columns) == ["", "value"])
    rows = dict(zip(shown[""], shown["value"]))
    assert rows["Requested by"] == mv.provenance.requested_by
    assert rows["Code"].startswith(mv.provenance.code_version)
    assert f"numpy {mv.provenance.packages['numpy']}" in rows["Packages"]
    assert any("package list" in b.proto.label for b in at.get("download_button"))


def test_the_tag_editor_cannot_touch_the_provenance(demo_env, demo_ws):
    ref = f"{NAME}:2"
    at = review(models_page(), 2)
    at.text_input(key=f"models.tag_key.{ref}").input("provenance.requested_by")
    at.text_input(key=f"models.tag_value.{ref}").input("someone-else")
    act(at.button(key=f"models.set_tag.{ref}").click())
    assert "provenance tags are recorded by the training run" in texts(at.error)
    assert demo_ws.models.get(NAME, 2).provenance.requested_by != "someone-else"
