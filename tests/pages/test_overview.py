"""The Overview page: production, staging, candidates, latest runs, the empty-workspace welcome."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from services.permissions import SYSTEM_ACTOR
from tests.conftest import copy_workspace
from tests.pages.helpers import as_read
from ui import overview_view as ov

APP = str(Path(__file__).resolve().parents[2] / "app.py")


def overview(timeout: float = 60) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    return as_read("\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]))


def test_demo_overview_shows_champion_candidates_and_runs(demo_env, demo_ws):
    champion = demo_ws.models.champion(demo_ws.policy.model_name)
    at = overview()
    assert at.title[0].value == "Overview"
    page = texts(at)
    assert f"**{champion.ref}**" in page
    assert demo_ws.policy.source in page  # the policy in force
    assert "Endpoint `staging`: no deployments" in page  # endpoints exist, nothing is deployed in this copy

    metrics = {m.label: m.value for m in at.metric}
    waiting = [v for v in demo_ws.models.versions(demo_ws.policy.model_name)
               if not v.archived and v.version > champion.version]
    assert metrics["Awaiting decision"] == str(len(waiting))
    assert metrics["Running"] == "0" and metrics["Queued"] == "0"
    assert metrics["rmse"] == ov.fmt_metric(champion.metrics["rmse"])

    candidates, runs = at.dataframe[0].value, at.dataframe[1].value
    assert list(candidates["version"]) == [v.ref for v in sorted(waiting, key=lambda v: -v.version)][:ov.CANDIDATE_LIMIT]
    assert {"Δ rmse", "Δ mae", "Δ r2"} <= set(candidates.columns)
    assert len(runs) == len(demo_ws.jobs.list())
    assert set(runs["gate"]) <= {"✅ passed", "❌ failed", "—"}


def test_candidates_exclude_archived_champion_and_older_versions(demo_ws):
    versions = demo_ws.models.versions(demo_ws.policy.model_name)
    by_number = {v.version: v for v in versions}
    champion = replace(by_number[2], aliases=("champion",))
    edited = [champion if v.version == 2 else replace(v, aliases=(), archived=v.version == 4) for v in versions]
    shown, more = ov.pending_candidates(edited, champion, limit=1)
    assert [v.version for v in shown] == [5] and more == 1  # v3 waits too; v1 is older, v4 archived
    shown, more = ov.pending_candidates(edited, None, limit=10)
    assert [v.version for v in shown] == [5, 3, 1] and more == 0


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
    monkeypatch.setenv("TOLLGATE_WORKSPACE", f"local://{path}")
    overview()  # imports and the workspace object are not what we measure
    from streamlit import cache_data
    cache_data.clear()
    at = AppTest.from_file(APP, default_timeout=60).run()  # its speed is measured by bench/bench_pages.py
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Failed · last 7 days"] == str(len([i for i in range(10_000) if i % 10 == 0
                                                         and 5 * i < 7 * 24 * 60]))
    assert len(at.dataframe[0].value) == ov.CANDIDATE_LIMIT
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
