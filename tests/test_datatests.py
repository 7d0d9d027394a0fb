"""Profiling and data tests as pure functions (no workspace)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from services.datatests import profile, psi, read_table, run_data_tests
from services.entities import CheckStatus
from services.policy import DataTestPolicy
from services.tables import non_numeric_example

POLICY = DataTestPolicy()


def normal(n=2000, mean=0.0, std=1.0, seed=0):
    return np.random.default_rng(seed).normal(mean, std, n)


def by(results, check, column=None):
    return [r for r in results if r.check == check and (column is None or r.column == column)]


# --- PSI ------------------------------------------------------------------------------------

def test_psi_of_identical_data_is_zero():
    x = normal()
    assert psi(x, x.copy()) == pytest.approx(0.0, abs=1e-9)


def test_psi_of_two_samples_of_one_distribution_is_small():
    assert psi(normal(seed=1), normal(seed=2)) < 0.1


def test_psi_of_a_shifted_distribution_is_significant():
    assert psi(normal(seed=1), normal(mean=1.0, seed=2)) > 0.25


def test_psi_grows_with_the_shift():
    base = normal(seed=1)
    values = [psi(base, normal(mean=m, seed=2)) for m in (0.0, 0.3, 0.6, 1.2)]
    assert values == sorted(values)


def test_psi_ignores_missing_values_and_is_nan_without_data():
    x = normal()
    with_gaps = x.copy()
    with_gaps[::10] = np.nan
    assert psi(x, with_gaps) < 0.01
    assert math.isnan(psi(x, np.array([np.nan, np.nan])))


def test_psi_of_a_constant_baseline():
    constant = np.full(100, 3.0)
    assert psi(constant, np.full(50, 3.0)) == pytest.approx(0.0, abs=1e-9)
    assert psi(constant, np.full(50, 4.0)) > 0.25


# --- profile ----------------------------------------------------------------------------------

def test_profile_matches_pandas_and_skips_statistics_of_non_numbers():
    frame = pd.DataFrame({"x": [1.0, 2.0, np.nan, 4.0], "n": [1, 2, 3, 4],
                          "s": ["a", None, "c", "d"], "b": [True, False, True, True]})
    cols = {c.name: c for c in profile(frame)}
    assert list(cols) == ["x", "n", "s", "b"]
    x = cols["x"]
    assert (x.missing, x.min, x.max) == (1, 1.0, 4.0)
    assert x.mean == pytest.approx(frame["x"].mean()) and x.std == pytest.approx(frame["x"].std())
    assert cols["n"].dtype == "int64" and cols["n"].std == pytest.approx(frame["n"].std())
    assert cols["s"].missing == 1 and cols["s"].mean is None
    assert cols["b"].mean is None, "booleans are not averaged"


def test_profile_of_an_all_missing_column_has_no_nan_statistics():
    [col] = profile(pd.DataFrame({"x": [np.nan, np.nan]}))
    assert col.missing == 2 and (col.min, col.max, col.mean, col.std) == (None, None, None, None)


# --- data tests --------------------------------------------------------------------------------

def frame(n=500, seed=0, **shift):
    g = np.random.default_rng(seed)
    out = pd.DataFrame({"age": g.normal(50, 10, n).round(), "bmi": g.normal(26, 4, n), "target": g.normal(150, 70, n)})
    for col, delta in shift.items():
        out[col] = out[col] + delta
    return out


def test_without_a_baseline_only_the_frames_own_checks_run():
    results = run_data_tests(frame(), None, POLICY)
    assert {r.check for r in results} == {"rows", "missing"}
    assert all(r.status == CheckStatus.PASS for r in results)


def test_a_fresh_sample_of_the_same_population_passes():
    results = run_data_tests(frame(seed=2), frame(seed=1), POLICY)
    assert [r for r in results if r.status != CheckStatus.PASS] == []


def test_a_mean_shift_is_graded_in_baseline_standard_deviations():
    base = frame(seed=1)
    warn = by(run_data_tests(frame(seed=1, bmi=6.0), base, POLICY), "shift_mean", "bmi")[0]
    fail = by(run_data_tests(frame(seed=1, bmi=14.0), base, POLICY), "shift_mean", "bmi")[0]
    assert warn.status == CheckStatus.WARN and 1.0 < warn.value < 3.0
    assert fail.status == CheckStatus.FAIL and fail.value > 3.0
    assert "σ" in fail.detail


def test_a_doubled_spread_fails_the_shift_check_through_the_std_ratio():
    base = frame(seed=1)
    wide = base.copy()
    wide["bmi"] = 26 + (base["bmi"] - 26) * 2.5
    [shift] = by(run_data_tests(wide, base, POLICY), "shift_mean", "bmi")
    assert shift.status == CheckStatus.FAIL and "std ratio 2.5" in shift.detail


def test_values_beyond_the_baseline_range_warn():
    base = frame(seed=1)
    wider = base.copy()
    wider.loc[0, "age"] = base["age"].max() + (base["age"].max() - base["age"].min())
    [rng_check] = by(run_data_tests(wider, base, POLICY), "range", "age")
    assert rng_check.status == CheckStatus.WARN


def test_schema_changes():
    base = frame()
    current = frame().drop(columns=["bmi"]).assign(glucose=1.0, age=lambda f: f["age"].astype(float) + 0.5)
    current["target"] = current["target"].astype(str)
    results = run_data_tests(current, base, POLICY)
    schema = {r.column: r for r in by(results, "schema")}
    assert schema["bmi"].status == CheckStatus.FAIL and "missing" in schema["bmi"].detail
    assert schema["glucose"].status == CheckStatus.WARN and "new column" in schema["glucose"].detail
    assert schema["target"].status == CheckStatus.FAIL, "number to text"
    assert "age" not in schema, "float vs float is no change"


def test_an_int_column_becoming_float_only_warns():
    base = pd.DataFrame({"n": np.arange(100), "target": np.arange(100)})
    current = base.astype({"n": float})
    [schema] = by(run_data_tests(current, base, POLICY), "schema", "n")
    assert schema.status == CheckStatus.WARN


def test_a_text_value_in_a_number_column_is_named_with_its_row():
    s = pd.Series(["1.5", "2", "oops", None, "x"])
    assert non_numeric_example(s) == "'oops' at row 3"
    assert non_numeric_example(pd.Series(["1", "2"])) is None
    [typ] = by(run_data_tests(pd.DataFrame({"v": s}), None, POLICY), "type", "v")
    assert typ.status == CheckStatus.FAIL and "'oops' at row 3" in typ.detail


def test_missing_fraction_thresholds():
    policy = DataTestPolicy(max_missing_fraction_warn=0.01, max_missing_fraction_fail=0.1, min_rows=1)
    data = pd.DataFrame({"few": [np.nan] + [1.0] * 199, "some": [np.nan] * 10 + [1.0] * 190,
                         "many": [np.nan] * 30 + [1.0] * 170})
    status = {r.column: r.status for r in by(run_data_tests(data, None, policy), "missing")}
    assert status == {"few": CheckStatus.PASS, "some": CheckStatus.WARN, "many": CheckStatus.FAIL}


def test_too_few_rows_fail():
    [rows] = by(run_data_tests(frame(n=20), None, POLICY), "rows")
    assert rows.status == CheckStatus.FAIL and rows.value == 20 and rows.threshold == 50


def test_read_table_keeps_quoted_commas_and_line_breaks(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('name,note,target\n"Smith, J","line one\nline two",3\n"Doe, A","",4\n')
    data, fmt = read_table(path)
    assert fmt == "csv" and len(data) == 2
    assert data.loc[0, "name"] == "Smith, J" and data.loc[0, "note"] == "line one\nline two"
