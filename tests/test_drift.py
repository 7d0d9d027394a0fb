"""Data drift (services/drift.py) and feature-only datasets.

The statistics are tested on synthetic data; drift by model version and the
registration of collected inputs run on a real local demo workspace, with a small
stand-in for ``ws.telemetry`` (our own ``TelemetryService.collected_inputs``
interface: a DataFrame of feature rows plus ``model`` and ``request_id``).
"""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from pipeline.train import split, validate
from services.datatests import psi, run_data_tests
from services.drift import (PLOT_BINS, QUANTILES, DriftStatus, default_dataset_name, drift_for_endpoint,
                            feature_drift, is_feature_only, ks_statistic, register_collected_inputs,
                            training_reference)
from services.entities import CheckStatus, TimeWindow, TrainingSpec
from services.errors import BackendUnavailable, Forbidden, InvalidInput
from services.policy import DataTestPolicy, DriftPolicy

LEAD = "lead@contoso.com"

POLICY = DriftPolicy()   # psi 0.1 / 0.25, ks 0.1 / 0.2, min_rows 500 (the shipped [drift] values)
FEATURES = ["age", "bmi", "bp"]
MEANS, STDS = {"age": 50.0, "bmi": 26.0, "bp": 95.0}, {"age": 13.0, "bmi": 4.4, "bp": 14.0}


def sample(n: int, seed: int, shift_sigma: dict[str, float] | None = None) -> pd.DataFrame:
    g = np.random.default_rng(seed)
    shift_sigma = shift_sigma or {}
    return pd.DataFrame({f: g.normal(MEANS[f] + shift_sigma.get(f, 0.0) * STDS[f], STDS[f], n) for f in FEATURES})


# --- statistics ------------------------------------------------------------------------------

def test_unshifted_live_data_is_ok():
    report = feature_drift(sample(5000, 1), sample(2000, 2), POLICY)
    assert report.judged and report.status == DriftStatus.OK, report.summary
    assert [f.feature for f in report.features] == FEATURES
    assert all(f.status == DriftStatus.OK and f.psi < POLICY.psi_warn and f.ks < POLICY.ks_warn
               for f in report.features), [f.detail for f in report.features]
    assert report.drifted == ()
    assert (report.reference_rows, report.live_rows) == (5000, 2000)


def test_a_feature_shifted_by_one_sigma_fails_and_is_named():
    report = feature_drift(sample(5000, 1), sample(2000, 2, {"bmi": 1.0}), POLICY)
    assert report.status == DriftStatus.FAIL
    bmi = report.feature("bmi")
    assert bmi.status == DriftStatus.FAIL
    assert bmi.psi > POLICY.psi_fail and bmi.ks > POLICY.ks_fail
    assert "PSI > 0.25 (fail)" in bmi.detail and "KS > 0.2 (fail)" in bmi.detail
    assert bmi.live_mean - bmi.reference_mean == pytest.approx(STDS["bmi"], rel=0.1)
    assert bmi.ks_pvalue < 1e-6
    assert [f.feature for f in report.drifted] == ["bmi"]
    assert report.feature("age").status == report.feature("bp").status == DriftStatus.OK
    assert "bmi" in report.summary and "age" not in report.summary


def test_the_thresholds_come_from_the_policy():
    reference, live = sample(5000, 1), sample(2000, 2, {"age": 0.3})
    age = feature_drift(reference, live, POLICY).feature("age")
    strict = DriftPolicy(psi_warn=age.psi / 2, psi_fail=age.psi * 2, ks_warn=age.ks / 2, ks_fail=age.ks * 2)
    lax = DriftPolicy(psi_warn=age.psi * 2, psi_fail=age.psi * 4, ks_warn=age.ks * 2, ks_fail=age.ks * 4)
    tight = DriftPolicy(psi_warn=0.0, psi_fail=age.psi / 2, ks_warn=0.0, ks_fail=1.0)
    assert feature_drift(reference, live, strict).feature("age").status == DriftStatus.WARN
    assert feature_drift(reference, live, lax).feature("age").status == DriftStatus.OK
    assert feature_drift(reference, live, tight).feature("age").status == DriftStatus.FAIL


def brute_force_ks(a, b) -> float:
    """max over every observed x of |share of a <= x - share of b <= x|, by plain loops."""
    best = 0.0
    for x in list(a) + list(b):
        fa = sum(1 for v in a if v <= x) / len(a)
        fb = sum(1 for v in b if v <= x) / len(b)
        best = max(best, abs(fa - fb))
    return best


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ks_matches_a_brute_force_computation_with_ties(seed):
    g = np.random.default_rng(seed)
    a = g.normal(0, 1, 173).round(1)              # rounded: many ties, within and across samples
    b = g.normal(0.4 * seed, 1.3, 129).round(1)
    statistic, where = ks_statistic(a, b)
    assert statistic == pytest.approx(brute_force_ks(a, b), abs=1e-12)
    assert abs(np.mean(a <= where) - np.mean(b <= where)) == pytest.approx(statistic, abs=1e-12)
    from scipy.stats import ks_2samp
    assert statistic == pytest.approx(ks_2samp(a, b).statistic, abs=1e-12)
    report = feature_drift(pd.DataFrame({"x": a}), pd.DataFrame({"x": b}), DriftPolicy(min_rows=1))
    assert report.feature("x").ks == pytest.approx(statistic, abs=1e-12)


def test_psi_is_the_data_tests_psi():
    reference, live = sample(3000, 4), sample(800, 5, {"bp": 0.5})
    report = feature_drift(reference, live, POLICY)
    for f in FEATURES:
        assert report.feature(f).psi == pytest.approx(psi(reference[f].to_numpy(), live[f].to_numpy()), abs=1e-12)


def test_fewer_live_rows_than_min_rows_are_not_judged_but_measured():
    reference = sample(3000, 1)
    shifted = sample(POLICY.min_rows - 1, 2, {"bmi": 2.0})
    report = feature_drift(reference, shifted, POLICY)
    assert report.status == DriftStatus.NOT_JUDGED and not report.judged
    assert report.summary.startswith(f"not judged: {POLICY.min_rows - 1} live rows, at least {POLICY.min_rows} needed")
    assert all(f.status == DriftStatus.NOT_JUDGED for f in report.features)
    assert report.feature("bmi").psi > POLICY.psi_fail, "the numbers are still there for the plots"
    assert "not judged" in report.feature("bmi").detail
    enough = pd.concat([shifted, sample(1, 3, {"bmi": 2.0})], ignore_index=True)
    assert feature_drift(reference, enough, POLICY).status == DriftStatus.FAIL


def test_plot_data_histograms_and_quantiles():
    reference, live = sample(3000, 1), sample(700, 2, {"age": 1.0})
    age = feature_drift(reference, live, POLICY).feature("age")
    assert len(age.bin_edges) == PLOT_BINS + 1 and list(age.bin_edges) == sorted(age.bin_edges)
    assert age.bin_edges[0] == min(reference["age"].min(), live["age"].min())
    assert age.bin_edges[-1] == max(reference["age"].max(), live["age"].max())
    assert sum(age.reference_hist) == pytest.approx(1.0) and sum(age.live_hist) == pytest.approx(1.0)
    assert len(age.reference_hist) == len(age.live_hist) == PLOT_BINS
    assert age.reference_quantiles == pytest.approx(tuple(np.quantile(reference["age"], QUANTILES)))
    assert age.live_quantiles == pytest.approx(tuple(np.quantile(live["age"], QUANTILES)))


def test_missing_values_are_ignored_and_a_missing_feature_is_reported():
    reference, live = sample(3000, 1), sample(500, 2)
    live.loc[::5, "bp"] = np.nan
    report = feature_drift(reference, live.drop(columns=["age"]), POLICY, features=FEATURES)
    assert report.feature("bp").live_rows == 400 and report.feature("bp").status == DriftStatus.OK
    assert report.missing_features == ("age",) and report.feature("age") is None
    assert report.status == DriftStatus.WARN and "missing from the live rows: age" in report.summary
    with pytest.raises(InvalidInput, match="no column"):
        feature_drift(reference, live, POLICY, features=["glucose"])


def test_default_features_skip_the_request_columns():
    live = sample(300, 2).assign(model="m:1", request_id=[f"r{i}" for i in range(300)])
    report = feature_drift(sample(1000, 1), live, POLICY)
    assert [f.feature for f in report.features] == FEATURES


# --- a workspace with collected inputs --------------------------------------------------------

class FakeTelemetry:
    """``collected_inputs`` over fixed frames per endpoint (newest first, as the contract says)."""

    def __init__(self, frames: dict[str, pd.DataFrame]):
        self.frames, self.calls = frames, []

    def collected_inputs(self, window, endpoint, model=None, limit=50_000):
        self.calls.append({"window": window, "endpoint": endpoint, "model": model, "limit": limit})
        frame = self.frames.get(endpoint, pd.DataFrame(columns=["model", "request_id"]))
        if model is not None:
            frame = frame[frame["model"] == model]
        return frame.head(limit).reset_index(drop=True)


class WithTelemetry:
    """The demo workspace, its telemetry replaced by a ``FakeTelemetry``."""

    def __init__(self, ws, telemetry):
        self._ws, self.telemetry = ws, telemetry

    def __getattr__(self, name):
        return getattr(self._ws, name)


WINDOW = TimeWindow(start=datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc),
                    end=datetime(2025, 3, 1, 9, 0, tzinfo=timezone.utc), bin_seconds=60)


def training_split(ws, mv) -> pd.DataFrame:
    frame = ws.datasets.load(mv.dataset, mv.dataset_version)
    p = ws.policy
    return split(frame, p.target, p.test_fraction, p.split_seed)[0]


def collected(ws, mv, n: int, seed: int, bmi_shift_sigma: float = 0.0) -> pd.DataFrame:
    """``n`` requests' features drawn from ``mv``'s training rows, as a gateway would record them."""
    rows = training_split(ws, mv).sample(n, replace=True, random_state=seed).reset_index(drop=True)
    rows["bmi"] = rows["bmi"] + bmi_shift_sigma * rows["bmi"].std()
    return rows.astype(float).assign(model=mv.ref, request_id=[f"{mv.version}-{seed}-{i}" for i in range(n)])


@pytest.fixture(scope="module")
def versions(demo_ws):
    """Three model versions; the first two trained on different dataset versions."""
    all_versions = sorted(demo_ws.models.versions(demo_ws.policy.model_name), key=lambda m: m.version)
    on_v1 = next(m for m in all_versions if m.dataset_version == 1)
    on_v2 = next(m for m in all_versions if m.dataset_version == 2)
    third = next(m for m in all_versions if m.version not in (on_v1.version, on_v2.version))
    return on_v1, on_v2, third


def test_training_reference_is_the_training_split_of_the_lineage_dataset(demo_ws, versions):
    for mv in versions[:2]:
        ref = training_reference(demo_ws, mv.ref)
        expected = training_split(demo_ws, mv)
        assert ref.dataset == f"{mv.dataset}:{mv.dataset_version}"
        assert list(ref.features) == [c for c in expected.columns]
        assert ref.frame.to_numpy().tolist() == expected.to_numpy().tolist()
        assert demo_ws.policy.target not in ref.frame.columns
        assert f"training split of {ref.dataset} ({len(expected)} rows)" in ref.description


def test_drift_per_model_version_against_its_own_training_data(demo_ws, versions):
    steady, drifting, few = versions
    frame = pd.concat([collected(demo_ws, steady, 600, seed=1),
                       collected(demo_ws, drifting, 600, seed=2, bmi_shift_sigma=1.0),
                       collected(demo_ws, few, 30, seed=3)], ignore_index=True)
    telemetry = FakeTelemetry({"production": frame})
    ws = WithTelemetry(demo_ws, telemetry)

    reports = drift_for_endpoint(ws, "production", WINDOW)
    by_model = {r.model: r for r in reports}
    assert set(by_model) == {steady.ref, drifting.ref, few.ref}
    assert [r.model for r in reports] == sorted(by_model, key=lambda ref: -int(ref.rsplit(":", 1)[1]))
    assert telemetry.calls[-1]["endpoint"] == "production" and telemetry.calls[-1]["window"] == WINDOW

    ok = by_model[steady.ref]
    assert ok.status == DriftStatus.OK, ok.summary
    assert ok.dataset == f"{steady.dataset}:{steady.dataset_version}"
    assert ok.reference_rows == len(training_split(demo_ws, steady)) and ok.live_rows == 600
    assert ok.endpoint == "production" and ok.window == WINDOW
    assert {f.feature for f in ok.features} == set(training_split(demo_ws, steady).columns)

    bad = by_model[drifting.ref]
    assert bad.dataset == f"{drifting.dataset}:{drifting.dataset_version}"
    assert bad.status == DriftStatus.FAIL
    assert [f.feature for f in bad.drifted] == ["bmi"], bad.summary
    assert bad.reference_rows == len(training_split(demo_ws, drifting))

    assert by_model[few.ref].status == DriftStatus.NOT_JUDGED and by_model[few.ref].live_rows == 30

    only = drift_for_endpoint(ws, "production", WINDOW, model=drifting.ref)
    assert [r.model for r in only] == [drifting.ref] and telemetry.calls[-1]["model"] == drifting.ref
    assert drift_for_endpoint(ws, "staging", WINDOW) == []


def test_a_version_without_training_data_is_not_judged_and_says_why(demo_ws, versions):
    gone = f"{demo_ws.policy.model_name}:999"
    frame = collected(demo_ws, versions[0], 200, seed=4).assign(model=gone)
    [report] = drift_for_endpoint(WithTelemetry(demo_ws, FakeTelemetry({"production": frame})), "production", WINDOW)
    assert report.model == gone and report.status == DriftStatus.NOT_JUDGED
    assert "no training data" in report.summary and "999" in report.summary


def test_without_telemetry_the_workspace_says_so(demo_ws):
    with pytest.raises(BackendUnavailable, match="no request telemetry"):
        drift_for_endpoint(WithTelemetry(demo_ws, None), "production", WINDOW)


# --- collected inputs as a feature-only dataset --------------------------------------------------

@pytest.fixture(scope="module")
def collected_version(demo_ws, versions):
    """150 collected requests of production, registered as ``production-inputs``."""
    frame = pd.concat([collected(demo_ws, versions[0], 100, seed=5),
                       collected(demo_ws, versions[1], 50, seed=6)], ignore_index=True)
    ws = WithTelemetry(demo_ws, FakeTelemetry({"production": frame}))
    dv = register_collected_inputs(ws, "production", WINDOW, default_dataset_name("production"), "lead@contoso.com")
    return dv, frame


def test_collected_inputs_become_a_feature_only_dataset_version(demo_ws, versions, collected_version):
    dv, frame = collected_version
    features = [c for c in frame.columns if c not in ("model", "request_id")]
    assert (dv.name, dv.version, dv.rows, dv.created_by) == ("production-inputs", 1, 150, "lead@contoso.com")
    assert dv.tags["labels"] == "none"
    assert dv.tags["source"] == "endpoint:production"
    assert dv.tags["window"] == "2025-03-01T08:00:00+00:00/2025-03-01T09:00:00+00:00"
    assert dv.tags["models"] == ",".join(sorted([versions[0].ref, versions[1].ref],
                                                key=lambda r: int(r.rsplit(":", 1)[1])))
    assert "Feature-only: no labels (target column 'target')" in dv.description
    assert is_feature_only(dv) and is_feature_only(dv, "target")
    assert not is_feature_only(demo_ws.datasets.get("diabetes", 1), "target")

    stored = demo_ws.datasets.load(dv.name, dv.version)
    assert list(stored.columns) == features
    # collected_inputs is newest first; the dataset keeps the order they arrived in
    assert stored.to_numpy().tolist() == frame[features].iloc[::-1].to_numpy().tolist()


def test_a_feature_only_version_warns_no_labels_instead_of_failing(demo_ws, collected_version):
    dv, _ = collected_version
    tests = demo_ws.datasets.data_tests(dv.name, dv.version)
    assert dv.tests_status == CheckStatus.WARN, [t for t in tests if t.status != CheckStatus.PASS]
    [labels] = [t for t in tests if t.check == "labels"]
    assert labels.status == CheckStatus.WARN and labels.column == "target"
    assert labels.detail.startswith("no labels")


def test_a_feature_only_version_of_the_training_dataset_is_compared_on_its_features(demo_ws, versions, tmp_path):
    labeled_before = max(v.version for v in demo_ws.datasets.versions("diabetes") if not is_feature_only(v))
    frame = collected(demo_ws, versions[1], 300, seed=7)
    ws = WithTelemetry(demo_ws, FakeTelemetry({"production": frame}))
    dv = register_collected_inputs(ws, "production", WINDOW, "diabetes", "lead@contoso.com")
    tests = demo_ws.datasets.data_tests(dv.name, dv.version)
    assert dv.baseline_version == labeled_before
    assert not [t for t in tests if t.status == CheckStatus.FAIL], [t for t in tests if t.status == CheckStatus.FAIL]
    assert not [t for t in tests if t.check == "schema" and t.column == "target"]
    assert {t.column for t in tests if t.check == "psi"} == set(frame.columns) - {"model", "request_id"}

    # the next labeled version is compared with labeled data, not with the collected inputs
    path = tmp_path / "labeled.csv"
    demo_ws.datasets.load("diabetes", labeled_before).to_csv(path, index=False)
    nxt = demo_ws.datasets.register("diabetes", path, tags={"labels": "none", "origin": "clinic"}, actor=LEAD)
    assert nxt.baseline_version == labeled_before
    assert nxt.tests_status == CheckStatus.PASS
    assert dict(nxt.tags) == {"origin": "clinic"}, "the labels tag follows the data, not the caller"


def test_training_on_a_feature_only_dataset_is_refused_at_submit(demo_ws, collected_version):
    dv, _ = collected_version
    before = len(demo_ws.jobs.list())
    with pytest.raises(InvalidInput) as refused:
        demo_ws.jobs.submit(TrainingSpec(dataset=dv.name, dataset_version=dv.version, estimator="ridge"), LEAD)
    assert str(refused.value) == ("dataset production-inputs:1 has no labels (target column 'target'); "
                                  "add labels before training")
    assert "feature-only" in refused.value.hint
    assert len(demo_ws.jobs.list()) == before, "nothing was started"


def test_the_pipeline_itself_refuses_data_without_labels():
    problems = validate(sample(100, 1), "target")
    assert problems == ["the data has no labels (target column 'target'); add labels before training"]


def test_nothing_collected_registers_nothing(demo_ws):
    before = demo_ws.datasets.names()
    ws = WithTelemetry(demo_ws, FakeTelemetry({}))
    with pytest.raises(InvalidInput, match="no collected inputs"):
        register_collected_inputs(ws, "staging", WINDOW, "staging-inputs", "lead@contoso.com")
    assert demo_ws.datasets.names() == before


def test_data_tests_without_a_target_argument_still_fail_a_missing_column():
    base = sample(200, 1).assign(target=1.0)
    current = sample(200, 2)
    old = run_data_tests(current, base, DataTestPolicy())
    assert [t.status for t in old if t.check == "schema" and t.column == "target"] == [CheckStatus.FAIL]
    new = run_data_tests(current, base, DataTestPolicy(), target="target")
    assert [t.status for t in new if t.column == "target"] == [CheckStatus.WARN]
    assert CheckStatus.worst(t.status for t in new) == CheckStatus.WARN
    # a feature column missing is still a failure
    dropped = run_data_tests(current.drop(columns=["bp"]), base, DataTestPolicy(), target="target")
    assert [t.status for t in dropped if t.check == "schema" and t.column == "bp"] == [CheckStatus.FAIL]


def test_unnamed_rows_take_the_model_features_names(demo_ws, versions):
    """Clients send ``{"data": [[...]]}``: collected_inputs names those columns f0 … fN."""
    named = collected(demo_ws, versions[0], 600, seed=11, bmi_shift_sigma=2.0)
    features = [c for c in named.columns if c not in ("model", "request_id")]
    unnamed = named.rename(columns={f: f"f{i}" for i, f in enumerate(features)})
    ws = WithTelemetry(demo_ws, FakeTelemetry({"production": unnamed}))
    [report] = drift_for_endpoint(ws, "production", WINDOW)
    assert report.missing_features == () and [f.feature for f in report.features] == features
    assert [f.feature for f in report.drifted] == ["bmi"]


def test_only_ml_leads_and_admins_register_collected_inputs(demo_ws, versions):
    ws = WithTelemetry(demo_ws, FakeTelemetry({"production": collected(demo_ws, versions[0], 20, seed=12)}))
    before = demo_ws.datasets.names()
    with pytest.raises(Forbidden, match="qa@contoso.com .* may not register collected inputs"):
        register_collected_inputs(ws, "production", WINDOW, "refused-inputs", "qa@contoso.com")
    assert demo_ws.datasets.names() == before
