"""Data drift: the inputs an endpoint received vs the training data of the version that served them.

Backend-independent: it reads ``ws.telemetry.collected_inputs`` (the feature rows
of the answered requests), ``ws.models`` (a version's lineage: the dataset version it
was trained on) and ``ws.datasets``. Per feature it measures

* the **population stability index** (PSI, ``services.datatests.psi``: the same
  statistic the data tests use, baseline-quantile bins), and
* the two-sample **Kolmogorov-Smirnov statistic**: the largest distance between the
  two empirical CDFs (computed here; the p-value comes from ``scipy.stats.ks_2samp``),

and judges each against ``[drift]`` in ``tollgate.toml`` (``DriftPolicy``): above
``*_fail`` fails, above ``*_warn`` warns. Fewer live rows than ``min_rows``: the
numbers are computed and shown but **not judged**.

The reference of a model version is the **training split** of its dataset version:
the rows ``pipeline.train.split`` gave the estimator (same test fraction and seed,
read from the version's ``model.json`` when the backend keeps it as a local folder,
else from the policy's ``[evaluation]``), features only. When the dataset has no
target column it cannot be split; the whole dataset stands in (said in ``reference``).

``register_collected_inputs`` turns collected rows into a new dataset version for
retraining. It has no labels: the store tags it ``labels: none``, its data tests
warn "no labels", and ``JobStore.submit`` refuses to train on it until labels are added.
"""
from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from .datatests import LABELS_TAG, NO_LABELS, has_labels, psi
from .entities import DatasetVersion, TimeWindow
from .errors import BackendUnavailable, InvalidInput, NotFound
from .policy import DriftPolicy
from .permissions import authorize
from .telemetry import mark, warning_of

META_COLUMNS = ("model", "request_id")        # columns of collected_inputs that are not features
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)     # levels of FeatureDrift.*_quantiles
PLOT_BINS = 20                                 # equal-width bins of FeatureDrift.*_hist
SOURCE_TAG, WINDOW_TAG, MODELS_TAG = "source", "window", "models"


class DriftStatus(str, Enum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    NOT_JUDGED = "not_judged"          # too few live rows (or no data) to judge by

    @staticmethod
    def worst(statuses: Iterable["DriftStatus"]) -> "DriftStatus":
        """Worst judged status; NOT_JUDGED only when nothing was judged."""
        order = [DriftStatus.OK, DriftStatus.WARN, DriftStatus.FAIL]
        judged = [DriftStatus(s) for s in statuses if DriftStatus(s) != DriftStatus.NOT_JUDGED]
        return max(judged, key=order.index) if judged else DriftStatus.NOT_JUDGED


@dataclass(frozen=True)
class FeatureDrift:
    """One feature, live vs reference, with the data for its plots."""
    feature: str
    status: DriftStatus
    detail: str                        # in words: the numbers and which limit they crossed
    psi: float | None                  # None: no values on one side
    ks: float | None                   # max |CDF_live - CDF_reference|, in [0, 1]
    ks_pvalue: float | None            # two-sided (scipy), None if scipy is absent
    ks_at: float | None                # the feature value where the CDFs are farthest apart
    reference_rows: int                # non-missing values compared
    live_rows: int
    reference_mean: float | None
    live_mean: float | None
    reference_std: float | None
    live_std: float | None
    bin_edges: tuple[float, ...]       # PLOT_BINS equal-width bins over both samples' range (n+1 edges)
    reference_hist: tuple[float, ...]  # share of the reference rows per bin (sums to 1)
    live_hist: tuple[float, ...]       # share of the live rows per bin (sums to 1)
    reference_quantiles: tuple[float, ...]  # at QUANTILES
    live_quantiles: tuple[float, ...]


@dataclass(frozen=True)
class DriftReport:
    """Live inputs (of one model version, usually) against a reference sample."""
    status: DriftStatus                # worst feature; NOT_JUDGED under min_rows
    summary: str                       # one sentence for the page / CLI
    reference: str                     # what the live rows were compared with, in words
    reference_rows: int
    live_rows: int
    features: tuple[FeatureDrift, ...]
    policy: DriftPolicy                # the thresholds used (for threshold lines in plots)
    missing_features: tuple[str, ...] = ()  # asked for but absent from the live rows
    endpoint: str | None = None
    model: str | None = None           # "name:version" that served the live rows
    dataset: str | None = None         # "name:version" of the reference (the model's lineage)
    window: TimeWindow | None = None
    quantile_levels: tuple[float, ...] = QUANTILES

    @property
    def judged(self) -> bool:
        return self.status != DriftStatus.NOT_JUDGED

    def feature(self, name: str) -> FeatureDrift | None:
        return next((f for f in self.features if f.feature == name), None)

    @property
    def drifted(self) -> tuple[FeatureDrift, ...]:
        """Features that warn or fail, worst first (by status, then PSI)."""
        rank = {DriftStatus.FAIL: 0, DriftStatus.WARN: 1}
        bad = [f for f in self.features if f.status in rank]
        return tuple(sorted(bad, key=lambda f: (rank[f.status], -(f.psi or 0.0))))


# --- statistics ----------------------------------------------------------------------------

def _values(x) -> np.ndarray:
    a = pd.to_numeric(pd.Series(x), errors="coerce").to_numpy(dtype=float)
    return a[np.isfinite(a)]


def ks_statistic(reference, live) -> tuple[float, float | None]:
    """Two-sample Kolmogorov-Smirnov statistic and where it occurs: the largest
    distance between the two empirical CDFs, evaluated at every observed value
    (ties handled: the CDF includes the value). ``(nan, None)`` without data."""
    a, b = np.sort(_values(reference)), np.sort(_values(live))
    if len(a) == 0 or len(b) == 0:
        return float("nan"), None
    grid = np.concatenate([a, b])
    gap = np.abs(np.searchsorted(a, grid, side="right") / len(a) - np.searchsorted(b, grid, side="right") / len(b))
    i = int(np.argmax(gap))
    return float(gap[i]), float(grid[i])


def ks_pvalue(reference, live) -> float | None:
    try:
        from scipy.stats import ks_2samp
    except ImportError:  # pragma: no cover - scipy comes with scikit-learn
        return None
    a, b = _values(reference), _values(live)
    if len(a) == 0 or len(b) == 0:
        return None
    return float(ks_2samp(a, b).pvalue)


def _judge(value: float | None, warn: float, fail: float) -> DriftStatus:
    if value is None or math.isnan(value):
        return DriftStatus.NOT_JUDGED
    return DriftStatus.FAIL if value > fail else DriftStatus.WARN if value > warn else DriftStatus.OK


def _finite(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def _plot_data(a: np.ndarray, b: np.ndarray):
    both = np.concatenate([a, b])
    if len(both) == 0:
        return (), (), (), (), ()
    lo, hi = float(both.min()), float(both.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, PLOT_BINS + 1)

    def share(x):
        return tuple(float(v) for v in np.histogram(x, edges)[0] / len(x)) if len(x) else ()

    def quantiles(x):
        return tuple(float(q) for q in np.quantile(x, QUANTILES)) if len(x) else ()
    return tuple(float(e) for e in edges), share(a), share(b), quantiles(a), quantiles(b)


def _one_feature(name: str, ref, live, policy: DriftPolicy, judged: bool, why_not: str) -> FeatureDrift:
    a, b = _values(ref), _values(live)
    psi_value = _finite(psi(a, b)) if len(a) and len(b) else None
    ks, at = ks_statistic(a, b)
    ks = _finite(ks)
    edges, ref_hist, live_hist, ref_q, live_q = _plot_data(a, b)
    parts = [f"PSI {psi_value:.3f}" if psi_value is not None else "PSI n/a",
             f"KS {ks:.3f}" if ks is not None else "KS n/a"]
    if not len(a) or not len(b):
        status, why = DriftStatus.NOT_JUDGED, "no values in the " + ("reference" if not len(a) else "live rows")
    elif not judged:
        status, why = DriftStatus.NOT_JUDGED, why_not
    else:
        status = DriftStatus.worst([_judge(psi_value, policy.psi_warn, policy.psi_fail),
                                    _judge(ks, policy.ks_warn, policy.ks_fail)])
        crossed = []
        for label, value, warn, fail in (("PSI", psi_value, policy.psi_warn, policy.psi_fail),
                                         ("KS", ks, policy.ks_warn, policy.ks_fail)):
            if value is not None and value > fail:
                crossed.append(f"{label} > {fail:g} (fail)")
            elif value is not None and value > warn:
                crossed.append(f"{label} > {warn:g} (warn)")
        why = "; ".join(crossed) or "within limits"
    return FeatureDrift(
        feature=name, status=status, detail=", ".join(parts) + f": {why}",
        psi=psi_value, ks=ks, ks_pvalue=ks_pvalue(a, b) if ks is not None else None, ks_at=at,
        reference_rows=len(a), live_rows=len(b),
        reference_mean=_finite(a.mean()) if len(a) else None, live_mean=_finite(b.mean()) if len(b) else None,
        reference_std=_finite(a.std(ddof=1)) if len(a) > 1 else None,
        live_std=_finite(b.std(ddof=1)) if len(b) > 1 else None,
        bin_edges=edges, reference_hist=ref_hist, live_hist=live_hist,
        reference_quantiles=ref_q, live_quantiles=live_q,
    )


def feature_drift(reference: pd.DataFrame, live: pd.DataFrame, policy: DriftPolicy,
                  features: Iterable[str] | None = None, *, reference_name: str = "the reference data",
                  endpoint: str | None = None, model: str | None = None, dataset: str | None = None,
                  window: TimeWindow | None = None) -> DriftReport:
    """PSI and KS per feature of ``live`` against ``reference``, judged by ``policy``.

    ``features``: the columns to compare (default: the numeric columns both frames
    have, except ``model`` and ``request_id``); asked-for features the live rows lack
    are listed in ``missing_features`` and make the report at least WARN.
    With fewer live rows than ``policy.min_rows`` every number is still computed
    (for the plots) but the status is NOT_JUDGED."""
    if features is None:
        names = [c for c in reference.columns if c in live.columns and c not in META_COLUMNS
                 and pd.api.types.is_numeric_dtype(reference[c])]
        missing: list[str] = []
    else:
        asked = list(features)
        unknown = [f for f in asked if f not in reference.columns]
        if unknown:
            raise InvalidInput(f"the reference data has no column(s) {', '.join(map(repr, unknown))}")
        names = [f for f in asked if f in live.columns]
        missing = [f for f in asked if f not in live.columns]
    live_rows, reference_rows = len(live), len(reference)
    if reference_rows == 0:
        judged, why_not = False, f"not judged: {reference_name} has no rows"
    elif live_rows < policy.min_rows:
        judged, why_not = False, (f"not judged: {live_rows} live row{'s' if live_rows != 1 else ''}, "
                                  f"at least {policy.min_rows} needed ([drift] min_rows)")
    else:
        judged, why_not = True, ""
    per_feature = tuple(_one_feature(f, reference[f], live[f], policy, judged, why_not) for f in names)

    if not judged:
        status, summary = DriftStatus.NOT_JUDGED, why_not
    else:
        status = DriftStatus.worst(f.status for f in per_feature)
        if missing:
            status = DriftStatus.worst([status, DriftStatus.WARN])
        bad = [f for f in per_feature if f.status in (DriftStatus.WARN, DriftStatus.FAIL)]
        if bad:
            listed = ", ".join(f"{f.feature} ({f.status.value}: PSI {_fmt(f.psi)}, KS {_fmt(f.ks)})"
                               for f in sorted(bad, key=lambda f: (f.status != DriftStatus.FAIL, -(f.psi or 0)))[:5])
            summary = f"drift in {len(bad)} of {len(per_feature)} features: {listed}" + (" …" if len(bad) > 5 else "")
        elif status == DriftStatus.NOT_JUDGED:
            summary = "not judged: no feature has values on both sides"
        else:
            summary = (f"no drift in {len(per_feature)} features (PSI ≤ {policy.psi_warn:g}, "
                       f"KS ≤ {policy.ks_warn:g})")
        if missing:
            summary += f"; missing from the live rows: {', '.join(missing)}"
    summary += f" — {live_rows} live rows vs {reference_rows} rows of {reference_name}"
    return DriftReport(status=status, summary=summary, reference=reference_name, reference_rows=reference_rows,
                       live_rows=live_rows, features=per_feature, policy=policy, missing_features=tuple(missing),
                       endpoint=endpoint, model=model, dataset=dataset, window=window)


# --- the training data of a model version ----------------------------------------------------

@dataclass(frozen=True)
class TrainingReference:
    frame: pd.DataFrame                # feature columns only
    features: tuple[str, ...]
    dataset: str                       # "name:version"
    description: str                   # e.g. "the training split of diabetes:1 (353 rows)"


def _model_json(uri: str) -> dict:
    """``model.json`` of a version kept as a local folder (the local backend); {} otherwise."""
    try:
        path = Path(uri) / "model.json"
        return json.loads(path.read_text()) if uri and path.is_file() else {}
    except (OSError, ValueError):
        return {}


def training_reference(ws, model_ref: str) -> TrainingReference:
    """The features ``name:version`` was trained on: the training split of its lineage
    dataset version. ``NotFound`` for an unknown version or a version without lineage."""
    name, _, version = str(model_ref).rpartition(":")
    if not name:
        raise InvalidInput(f"expected a model reference name:version, got {model_ref!r}")
    mv = ws.models.get(name, int(version) if version.isdigit() else version)
    if not mv.dataset or mv.dataset_version is None:
        raise NotFound(f"model {mv.ref} has no lineage: the dataset it was trained on is not recorded")
    frame = ws.datasets.load(mv.dataset, mv.dataset_version)
    dataset = f"{mv.dataset}:{mv.dataset_version}"
    meta = _model_json(mv.uri)
    policy = ws.policy
    target = meta.get("target", policy.target)
    features = [f for f in meta.get("features", []) if f in frame.columns] or \
        [c for c in frame.columns if c != target]
    if target in frame.columns:
        from pipeline.train import split  # imports scikit-learn: only when a reference is needed
        X_train = split(frame, target, float(meta.get("test_fraction", policy.test_fraction)),
                        int(meta.get("split_seed", policy.split_seed)), meta.get("task", "regression"))[0]
        return TrainingReference(X_train[features].reset_index(drop=True), tuple(features), dataset,
                                 f"the training split of {dataset} ({len(X_train)} rows)")
    return TrainingReference(frame[features].reset_index(drop=True), tuple(features), dataset,
                             f"all of {dataset} ({len(frame)} rows; no target column to split by)")


def _collected(ws, endpoint: str, window: TimeWindow, model: str | None, limit: int) -> pd.DataFrame:
    telemetry = getattr(ws, "telemetry", None)
    if telemetry is None:
        raise BackendUnavailable("this workspace has no request telemetry to read collected inputs from",
                                 hint="Start the endpoints (tollgate.py up) so that the gateways record requests.")
    return telemetry.collected_inputs(window, endpoint, model=model, limit=limit)


def with_feature_names(rows: pd.DataFrame, features: tuple[str, ...] | list[str]) -> pd.DataFrame:
    """Name positional columns. Clients usually send ``{"data": [[...]]}`` rows without
    names, which ``collected_inputs`` returns as ``f0 … fN``; ``score.py`` reads them in
    the order of the model's features, so that order names them."""
    positional = [c for c in rows.columns if c not in META_COLUMNS]
    if len(positional) == len(features) and positional == [f"f{i}" for i in range(len(features))]:
        return rows.rename(columns=dict(zip(positional, features)))
    return rows


def _model_sort_key(ref: str):
    name, _, version = str(ref).rpartition(":")
    return (name, -int(version)) if version.isdigit() else (name, 0)


def drift_for_endpoint(ws, endpoint: str, window: TimeWindow, model: str | None = None,
                       *, limit: int = 50_000) -> list[DriftReport]:
    """One report per model version that answered requests on ``endpoint`` in ``window``
    (only ``model`` when given, "name:version"), its collected inputs against the
    training data of that version, newest version first. Empty when nothing was
    collected. A version whose training data cannot be found gets a NOT_JUDGED
    report saying why."""
    live = _collected(ws, endpoint, window, model, limit)
    if live.empty or "model" not in live.columns:
        return mark([], warning_of(live))
    reports = []
    for ref in sorted(live["model"].dropna().unique(), key=_model_sort_key):
        rows = live[live["model"] == ref]
        try:
            reference = training_reference(ws, ref)
        except (NotFound, InvalidInput) as e:
            reports.append(DriftReport(
                status=DriftStatus.NOT_JUDGED, summary=f"not judged: no training data for {ref}: {e}",
                reference="unavailable", reference_rows=0, live_rows=len(rows), features=(),
                policy=ws.policy.drift, endpoint=endpoint, model=str(ref), window=window))
            continue
        rows = with_feature_names(rows, reference.features)
        reports.append(feature_drift(reference.frame, rows, ws.policy.drift, reference.features,
                                     reference_name=reference.description, endpoint=endpoint, model=str(ref),
                                     dataset=reference.dataset, window=window))
    return mark(reports, warning_of(live))  # inputs collected only in part: the reports say so


# --- collected inputs as a dataset version ---------------------------------------------------

def is_feature_only(dv: DatasetVersion, target: str | None = None) -> bool:
    """A version without labels: tagged ``labels: none``, or (given ``target``) without that column."""
    return dv.tags.get(LABELS_TAG) == NO_LABELS or (target is not None and not has_labels(dv, target))


def default_dataset_name(endpoint: str) -> str:
    """A name apart from the training datasets, so "latest" of those stays trainable."""
    return f"{endpoint}-inputs"


def register_collected_inputs(ws, endpoint: str, window: TimeWindow, name: str, actor: str,
                              model: str | None = None, *, limit: int = 50_000) -> DatasetVersion:
    """Register the inputs ``endpoint`` answered in ``window`` (only those served by
    ``model`` when given) as the next version of dataset ``name``, oldest row first.

    The version is **feature-only**: the requests carried no labels. It is tagged
    ``labels: none``, ``source: endpoint:<endpoint>``, ``window: <start>/<end>`` (ISO 8601)
    and ``models`` (the versions that served the rows); its data tests warn "no labels";
    training on it is refused until labels are added. At most ``limit`` rows (the
    newest) are taken; the description says so when the limit cut. ``InvalidInput``
    when nothing was collected."""
    authorize(ws.policy, actor, "register_collected_inputs")
    live = _collected(ws, endpoint, window, model, limit)
    start, end = window.start, window.end
    span = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    if live.empty:
        raise InvalidInput(f"endpoint {endpoint!r} has no collected inputs from {span}"
                           + (f" served by {model}" if model else ""),
                           hint="Pick a longer window, or send requests to the endpoint first.")
    target = ws.policy.target
    served = [m for m in live["model"].dropna().unique()] if "model" in live else []
    if served:  # unnamed rows take the names of the features of a version that served them
        try:
            live = with_feature_names(live, training_reference(ws, str(served[0])).features)
        except (NotFound, InvalidInput):
            pass
    features = [c for c in live.columns if c not in META_COLUMNS and c != target]
    frame = live[features].iloc[::-1].reset_index(drop=True)  # collected_inputs is newest first
    models = sorted({str(m) for m in live["model"].dropna()},
                    key=lambda r: (_model_sort_key(r)[0], -_model_sort_key(r)[1])) if "model" in live else []
    cut = len(live) >= limit
    description = (f"Inputs collected by endpoint {endpoint!r} from {span}: {len(frame)} rows"
                   + (f" (the newest {limit}, the limit: older rows of the window may be left out)" if cut else "")
                   + (f", served by {', '.join(models)}" if models else "")
                   + f". Feature-only: no labels (target column {target!r}); add labels before training.")
    tags = {LABELS_TAG: NO_LABELS, SOURCE_TAG: f"endpoint:{endpoint}",
            WINDOW_TAG: f"{start.isoformat()}/{end.isoformat()}", MODELS_TAG: ",".join(models)}
    file_name = f"{endpoint}-inputs-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}.parquet"
    with tempfile.TemporaryDirectory(prefix="tollgate-collected-") as tmp:
        path = Path(tmp) / file_name
        frame.to_parquet(path, index=False)
        return ws.datasets.register(name, path, actor=actor, description=description, tags=tags)


__all__ = [
    "DriftStatus", "FeatureDrift", "DriftReport", "TrainingReference", "feature_drift", "ks_statistic",
    "ks_pvalue", "training_reference", "drift_for_endpoint", "register_collected_inputs", "is_feature_only",
    "default_dataset_name", "with_feature_names", "QUANTILES", "PLOT_BINS", "META_COLUMNS",
]
