"""The Overview page: production, staging, candidates, latest runs, the empty-workspace welcome."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.entities import Stage
from services.permissions import SYSTEM_ACTOR
from services.stages import awaiting_decision
from tests.conftest import copy_workspace
from tests.pages.helpers import arrange_stages, as_read
from ui import overview_view as ov

APP = str(Path(__file__).resolve().parents[2] / "app.py")
MODEL = "diabetes-regressor"


def overview(timeout: float = 60) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return as_read("\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]))


def queue_count(at: AppTest) -> str:
    return {m.label: m.value for m in at.metric}["Awaiting decision"]


def test_demo_overview_shows_champion_candidates_and_runs(demo_env, demo_ws):
    champion = demo_ws.models.champion(demo_ws.policy.model_name)
    at = overview()
    assert at.title[0].value == "Overview"
    page = texts(at)
    assert f"**{champion.ref}**" in page
    assert demo_ws.policy.source in page  # the policy in force
    assert "Endpoint `staging`: no deployments" in page  # endpoints exist, nothing is deployed in this copy

    metrics = {m.label: m.value for m in at.metric}
    # nothing was deployed to staging in this copy: no version awaits approval, so none awaits a decision
    assert awaiting_decision(demo_ws.releases.states(MODEL)) == []
    assert metrics["Awaiting decision"] == "0"
    assert "None: no version is awaiting approval" in page
    assert metrics["Running"] == "0" and metrics["Queued"] == "0"
    assert metrics["rmse"] == ov.fmt_metric(champion.metrics["rmse"])

    [runs] = [d.value for d in at.dataframe]
    assert len(runs) == len(demo_ws.jobs.list())
    assert set(runs["gate"]) <= {"✅ passed", "❌ failed", "—"}


def test_the_queue_is_the_versions_awaiting_approval_before_and_after_decisions(demo_template, tmp_path,
                                                                                monkeypatch):
    from services.local.workspace import LocalWorkspace
    root = copy_workspace(demo_template, tmp_path / "ws")
    arrange_stages(root, {1: "production", 2: "approved", 3: "awaiting_approval", 4: "awaiting_approval",
                          5: "rolled_back"})
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{root}")
    ws = LocalWorkspace(root)
    try:
        def check(expected: list[int]) -> AppTest:
            import streamlit as st
            st.cache_data.clear()
            at = overview()
            assert sorted((s.model_version for s in awaiting_decision(ws.releases.states(MODEL))), reverse=True) == expected
            assert queue_count(at) == str(len(expected))
            if expected:
                assert list(at.dataframe[0].value["version"]) == [f"{MODEL}:{v}" for v in expected]
            return at

        at = check([4, 3])      # not the approved v2, not the rolled-back v5, not the champion
        assert "Also on their way: 1 approved" in texts(at)
        ws.releases.approve(MODEL, 3, "lead@contoso.com", "better on all three metrics")
        check([4])
        ws.releases.reject(MODEL, 4, "lead@contoso.com", "overfits")
        at = check([])
        assert "Also on their way: 2 approved" in texts(at)
    finally:
        ws.close()


def test_the_queue_keeps_the_newest_and_counts_the_rest(demo_ws):
    versions = demo_ws.models.versions(MODEL)
    states = [ov.ReleaseState(MODEL, v, Stage.AWAITING_APPROVAL) for v in (2, 3, 5)] + \
             [ov.ReleaseState(MODEL, 4, Stage.APPROVED), ov.ReleaseState("other", 1, Stage.AWAITING_APPROVAL)]
    shown, more = ov.decision_queue(versions, states, limit=2)
    assert [v.version for v in shown] == [5, 3] and more == 1
    assert ov.in_release_text(states) == "1 approved"


def test_deltas_are_coloured_by_the_metric_direction(demo_ws):
    policy = demo_ws.policy
    assert ov.delta_verdict(-1.0, policy.direction("rmse")) == "better"
    assert ov.delta_verdict(-0.1, policy.direction("r2")) == "worse"
    assert ov.delta_verdict(0.0, "lower") == "same"
    versions = demo_ws.models.versions(policy.model_name)
    champion = next(v for v in versions if v.is_champion)
    worse = replace(champion, version=99, metrics={"rmse": champion.metrics["rmse"] + 5,
                                                   "mae": champion.metrics["mae"], "r2": champion.metrics["r2"] + 0.1})
    metrics = ov.key_metrics(policy)
    frame = ov.candidates_frame([worse], champion, metrics)
    assert frame.loc[0, "Δ rmse"] == pytest.approx(5)
    css = ov.styled_candidates(frame, policy, metrics)._compute().ctx
    columns = list(frame.drop(columns=[f"Δ% {m}" for m in metrics]).columns)
    colour = {c: "; ".join(f"{k}: {v}" for k, v in css[(0, columns.index(c))]) for c in ("Δ rmse", "Δ r2", "Δ mae")}
    assert ov.WORSE in colour["Δ rmse"] and ov.BETTER in colour["Δ r2"] and ov.NEUTRAL in colour["Δ mae"]


def test_durations_are_readable():
    assert [ov.fmt_duration(s) for s in (None, 0.14, 42, 125, 7260)] == ["—", "0.1 s", "42 s", "2 min 05 s", "2 h 01 min"]


def big_workspace(template: Path, target: Path, runs: int = 10_000, versions: int = 2_000) -> Path:
    """The demo plus ``runs`` runs (a tenth failed) and ``versions`` model versions, written straight into SQLite."""
    copy_workspace(template, target)
    db = sqlite3.connect(target / "tollgate.db")
    db.row_factory = sqlite3.Row
    run = dict(db.execute("SELECT * FROM runs LIMIT 1").fetchone())
    now = datetime.now(timezone.utc)
    rows = []
    for i in range(runs):
        at = (now - timedelta(minutes=5 * i)).isoformat(timespec="microseconds")
        rows.append({**run, "id": f"run-bench-{i:05d}", "status": "failed" if i % 10 == 0 else "completed",
                     "created_at": at, "started_at": at, "ended_at": at, "model_version": None,
                     "error": "validation failed" if i % 10 == 0 else None})
    cols = list(run)
    db.executemany(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   [tuple(r[c] for c in cols) for r in rows])
    model = dict(db.execute("SELECT * FROM models ORDER BY version DESC LIMIT 1").fetchone())
    start = model["version"] + 1
    cols = list(model)
    db.executemany(f"INSERT INTO models ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                   [tuple({**model, "version": v, "archived": int(v % 4 == 0),
                           "metrics_json": json.dumps({"rmse": 50 + v % 7, "mae": 40.0, "r2": 0.5})}[c] for c in cols)
                    for v in range(start, start + versions - model["version"])])
    db.commit()
    db.close()
    return target


def test_overview_counts_right_with_10000_runs_and_2000_versions(demo_template, tmp_path, monkeypatch):
    path = big_workspace(demo_template, tmp_path / "big")
    waiting = [v for v in range(1985, 2000) if v % 4][:7]   # archived ones (v % 4 == 0) never await anything
    arrange_stages(path, {v: "awaiting_approval" for v in waiting})
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    overview()  # imports and the workspace object are not what we measure
    from streamlit import cache_data
    cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()  # its speed is measured by bench/bench_pages.py
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Failed · last 7 days"] == str(len([i for i in range(10_000) if i % 10 == 0
                                                         and 5 * i < 7 * 24 * 60]))
    assert metrics["Awaiting decision"] == str(len(waiting))
    assert len(at.dataframe[0].value) == ov.CANDIDATE_LIMIT
    assert f"({len(waiting) - ov.CANDIDATE_LIMIT} more waiting)" in "".join(p.proto.label for p in at.get("page_link"))
    assert len(at.dataframe[1].value) == ov.LATEST_RUNS


@pytest.fixture
def empty_env(empty_ws, monkeypatch):
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{empty_ws.root}")
    yield empty_ws
    empty_ws.endpoints.down(SYSTEM_ACTOR)  # "Load demo data" deploys the demo endpoints for real


def test_empty_workspace_welcomes_and_loads_the_demo(empty_env):
    at = overview()
    assert any(s.value == "Welcome to Tollgate" for s in at.subheader)
    button = next(b for b in at.button if b.label == "Load demo data")
    button.click().run(timeout=300)  # trains the demo models for real
    assert not at.exception, [e.value for e in at.exception]
    assert not any(s.value == "Welcome to Tollgate" for s in at.subheader)
    champion = empty_env.models.champion(empty_env.policy.model_name)
    assert champion is not None
    assert f"**{champion.ref}**" in texts(at)


def test_a_failing_latest_dataset_is_flagged(demo_ws):
    latest = demo_ws.datasets.get("diabetes")
    failing = replace(latest, version=latest.version + 1, tests_status=ov.CheckStatus.FAIL)
    older_failing = replace(latest, version=1, tests_status=ov.CheckStatus.FAIL)
    assert ov.latest_failing_datasets([latest, older_failing]) == []  # only the newest version counts
    assert ov.latest_failing_datasets([failing, latest]) == [failing]


def test_a_damaged_telemetry_file_fails_only_the_health_line(demo_template, tmp_path, monkeypatch):
    root = copy_workspace(demo_template, tmp_path / "ws")
    for leftover in root.glob("telemetry.db*"):
        leftover.unlink()
    (root / "telemetry.db").write_bytes(b"not a database " * 100)
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{root}")
    import streamlit as st
    st.cache_data.clear()
    st.cache_resource.clear()
    at = overview()
    page = texts(at)
    assert "Endpoint `production`" in page and "Latest runs" in "\n".join(s.value for s in at.subheader)
    errors = [as_read(e.value) for e in at.error]
    assert any(str(root / "telemetry.db") in e and "Move it aside" in e for e in errors), errors


def test_a_failing_latest_dataset_names_the_version_trained_instead(demo_template, tmp_path, monkeypatch):
    from services.local.workspace import LocalWorkspace
    root = copy_workspace(demo_template, tmp_path / "ws")
    ws = LocalWorkspace(root)
    path = tmp_path / "no-bmi.csv"
    ws.datasets.load("diabetes", 2).drop(columns=["bmi"]).to_csv(path, index=False)
    assert ws.datasets.register("diabetes", path, actor="lead@contoso.com").version == 3
    ws.close()
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{root}")
    at = overview()
    [alert] = [w.value for w in at.warning if "diabetes:3" in w.value]
    assert "schema [bmi]" in alert
    assert "runs and schedules train on **diabetes:2**, the latest passing version" in alert
