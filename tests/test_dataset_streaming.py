"""Registering a dataset version: data tests outside the write transaction, files read in chunks.

The peak memory and the lock time for a 200 MB CSV are measured by
``bench/bench_register_large.py``; here, the behaviour behind those figures.
"""
from __future__ import annotations

import sqlite3

import numpy as np
import pandas as pd
import pytest

from services import tables
from services.datatests import profile, read_table, run_data_tests
from services.entities import CheckStatus

LEAD = "lead@contoso.com"  # [roles] of tollgate.toml: registering data needs ml_lead or admin


def patients(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(20, 80, n), "bmi": rng.normal(26, 4, n).round(1),
                         "bp": rng.normal(95, 14, n).round(2), "target": rng.normal(150, 75, n).round(0)})


def write_locked(path) -> bool:
    conn = sqlite3.connect(path, timeout=0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as e:
        assert "locked" in str(e)
        return True
    finally:
        conn.close()


def test_data_tests_run_while_the_workspace_is_not_write_locked(empty_ws, tmp_path, monkeypatch):
    ws = empty_ws
    patients(300, 1).to_csv(tmp_path / "v1.csv", index=False)
    patients(300, 2).to_csv(tmp_path / "v2.csv", index=False)
    ws.datasets.register("patients", tmp_path / "v1.csv", actor=LEAD)

    # the PSI's histogram is the heart of the comparison with the baseline: look at the lock from there
    seen = []
    histogram = np.histogram

    def watching(*args, **kwargs):
        seen.append(write_locked(ws.root / "tollgate.db"))
        return histogram(*args, **kwargs)
    monkeypatch.setattr(np, "histogram", watching)
    v2 = ws.datasets.register("patients", tmp_path / "v2.csv", actor=LEAD)

    assert seen, "the data tests compared v2 with v1"
    assert not any(seen), "the workspace was write-locked while the data tests ran"
    assert v2.version == 2 and v2.baseline_version == 1
    assert {t.check for t in ws.datasets.data_tests("patients", 2)} >= {"schema", "range", "shift_mean", "psi"}


def test_a_file_read_in_chunks_is_profiled_tested_and_stored_as_a_whole_read_would_be(empty_ws, tmp_path,
                                                                                       monkeypatch):
    ws = empty_ws
    base = patients(400, 3)
    base.to_csv(tmp_path / "v1.csv", index=False)
    ws.datasets.register("patients", tmp_path / "v1.csv", actor=LEAD)
    # types that change from chunk to chunk: an int column with a gap late (-> float), a number
    # column with a word late (-> text), a column empty at first
    new = patients(1000, 4).astype({"bmi": object})
    new.loc[950, "age"] = np.nan
    new.loc[870, "bmi"] = "obese"
    new["note"] = pd.Series([None] * 1000, dtype=object)
    new.loc[990, "note"] = "call back"
    new.to_csv(tmp_path / "v2.csv", index=False)
    monkeypatch.setattr(tables, "CHUNK_ROWS", 64)

    v2 = ws.datasets.register("patients", tmp_path / "v2.csv", actor=LEAD)

    whole, _ = read_table(tmp_path / "v2.csv")
    assert [(c.name, c.dtype, c.missing) for c in v2.columns] == \
        [(c.name, c.dtype, c.missing) for c in profile(whole)]
    for mine, theirs in zip(v2.columns, profile(whole)):
        for stat in ("min", "max", "mean", "std"):
            expected = getattr(theirs, stat)
            assert getattr(mine, stat) == (None if expected is None else pytest.approx(expected, rel=1e-9)), \
                (mine.name, stat)
    expected = run_data_tests(whole, ws.datasets.load("patients", 1), ws.policy.data_tests, target=ws.policy.target)
    got = ws.datasets.data_tests("patients", 2)
    assert [(t.check, t.column, t.status, t.detail) for t in got] == \
        [(t.check, t.column, t.status, t.detail) for t in expected]
    assert any(t.check == "type" and t.column == "bmi" and "'obese' at row 871" in t.detail for t in got)
    assert v2.tests_status == CheckStatus.FAIL and v2.rows == 1000

    stored = ws.datasets.load("patients", 2)
    assert list(stored.columns) == list(whole.columns) and len(stored) == 1000
    assert stored["age"].dtype == np.float64 and np.isnan(stored.loc[950, "age"])
    assert stored.loc[870, "bmi"] == "obese" and stored.loc[990, "note"] == "call back"
    pd.testing.assert_series_equal(stored["bp"], whole["bp"])


def test_a_registration_that_keeps_losing_the_race_tests_under_the_lock(empty_ws, tmp_path, monkeypatch):
    """With no optimistic attempt left, each registration tests against the baseline it commits with:
    concurrent registrations all succeed, each tested against the newest earlier version that passed."""
    import threading

    from services.local import datasets as local_datasets
    monkeypatch.setattr(local_datasets, "MAX_BASELINE_RETRIES", 0)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"part-{i}.csv")
        patients(120 + i, seed=i).to_csv(paths[-1], index=False)
    barrier, errors = threading.Barrier(len(paths)), []

    def register(path):
        try:
            barrier.wait()
            empty_ws.datasets.register("raced", path, actor=LEAD)
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=register, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    versions = sorted(empty_ws.datasets.versions("raced"), key=lambda v: v.version)
    assert [v.version for v in versions] == [1, 2, 3, 4]
    for i, v in enumerate(versions):  # the baseline: the newest earlier version that did not fail its tests
        passed_before = [w.version for w in versions[:i] if w.tests_status != CheckStatus.FAIL]
        assert v.baseline_version == (passed_before[-1] if passed_before else None)
