"""Reading, profiling and testing tabular data; backend-independent.

Data tests compare a new dataset version with its baseline (the previous
version): schema, missing values, ranges, mean shift in baseline standard
deviations (as Microsoft's MLOpsPython reference does) and the population
stability index (PSI) per feature. Each check yields pass / warn / fail and
names its column.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .entities import CheckStatus, ColumnProfile, DatasetVersion, DataTestResult
from .errors import InvalidInput
from .policy import DataTestPolicy

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
PSI_BINS = 10

# A dataset version without the target column is *feature-only* (e.g. inputs collected
# by an endpoint): the store tags it ``labels: none``; it is compared on its features
# and cannot be trained on until labels are added.
LABELS_TAG = "labels"
NO_LABELS = "none"


def has_labels(dv: DatasetVersion, target: str) -> bool:
    """Whether a dataset version has its target column (False: feature-only)."""
    return dv.column(target) is not None


def no_labels_message(ref: str, target: str) -> str:
    return f"dataset {ref} has no labels (target column {target!r}); add labels before training"


def read_table(path: Path, original_name: str | None = None) -> tuple[pd.DataFrame, str]:
    """Parse a CSV or Parquet file; ``InvalidInput`` with the reason if it cannot be read."""
    name = original_name or Path(path).name
    fmt = FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{name}: unsupported file type; upload a .csv or .parquet file")
    try:
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            problem = csv_shape_problem(path)
            if problem:
                raise InvalidInput(f"{name}: {problem}",
                                   hint="Every row needs as many fields as the header, and every column a unique name.")
            frame = pd.read_csv(path, on_bad_lines="error")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidInput(f"{name}: could not be read as {fmt.upper()}: {first}",
                           hint="Check the delimiter, the header row and that every row has the same number of fields.") from e
    if frame.empty or len(frame.columns) == 0:
        raise InvalidInput(f"{name}: the file has no rows", hint="Upload a file with a header row and data rows.")
    unnamed = [c for c in frame.columns if str(c).startswith("Unnamed:")]
    if unnamed:
        raise InvalidInput(f"{name}: {len(unnamed)} column(s) have no header name",
                           hint="Every column needs a name in the header row.")
    dupes = frame.columns[frame.columns.duplicated()].tolist()
    if dupes:
        raise InvalidInput(f"{name}: duplicate column names: {', '.join(map(str, dupes))}")
    frame.columns = [str(c) for c in frame.columns]
    return frame, fmt


def csv_shape_problem(path: Path) -> str | None:
    """What pandas would silently repair in a CSV: short rows (filled with NaN),
    rows with extra fields (dropped or taken as the index) and duplicate header
    names (renamed ``a.1``). ``None`` when the shape is sound."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = csv.reader(f)
        header = next((row for row in rows if row), None)  # pandas skips leading blank lines too
        if not header:
            return None
        dupes = sorted({h for h in header if h and header.count(h) > 1})
        if dupes:
            return f"duplicate column names: {', '.join(dupes)}"
        for row in rows:
            if row and len(row) != len(header):
                return f"line {rows.line_num} has {len(row)} fields, the header has {len(header)}"
    return None


def _num(x) -> float | None:
    if x is None:
        return None
    x = float(x)
    return None if math.isnan(x) or math.isinf(x) else x


def profile(frame: pd.DataFrame) -> tuple[ColumnProfile, ...]:
    cols = []
    for name in frame.columns:
        s = frame[name]
        missing = int(s.isna().sum())
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            cols.append(ColumnProfile(name, str(s.dtype), missing, _num(s.min()), _num(s.max()),
                                      _num(s.mean()), _num(s.std())))
        else:
            cols.append(ColumnProfile(name, str(s.dtype), missing))
    return tuple(cols)


def psi(baseline: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index with baseline-quantile bins.
    < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 significant shift."""
    baseline = baseline[~np.isnan(baseline)]
    current = current[~np.isnan(current)]
    if len(baseline) == 0 or len(current) == 0:
        return float("nan")
    edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)))
    if len(edges) < 2:  # constant baseline: compare "equal to it" vs not
        b = np.array([1.0, 0.0])
        c = np.array([np.mean(current == baseline[0]), np.mean(current != baseline[0])])
    else:
        edges[0], edges[-1] = -np.inf, np.inf
        b = np.histogram(baseline, edges)[0] / len(baseline)
        c = np.histogram(current, edges)[0] / len(current)
    eps = 1e-4
    b, c = np.clip(b, eps, None), np.clip(c, eps, None)
    return float(np.sum((c - b) * np.log(c / b)))


def _status(value: float, warn: float, fail: float) -> CheckStatus:
    if value > fail:
        return CheckStatus.FAIL
    if value > warn:
        return CheckStatus.WARN
    return CheckStatus.PASS


def non_numeric_example(s: pd.Series) -> str | None:
    """The first value of an object column that is not a number, with its row."""
    coerced = pd.to_numeric(s, errors="coerce")
    bad = s[coerced.isna() & s.notna()]
    if bad.empty:
        return None
    return f"{bad.iloc[0]!r} at row {int(bad.index[0]) + 1}"


def run_data_tests(frame: pd.DataFrame, baseline: pd.DataFrame | None,
                   policy: DataTestPolicy, target: str | None = None) -> list[DataTestResult]:
    """Checks of ``frame`` on its own and, when given, against ``baseline``.

    With ``target`` (the label column), a frame without it is feature-only: one
    ``labels`` check warns "no labels" instead of a failing schema check, and the
    rest compares its features."""
    results: list[DataTestResult] = []
    add = results.append
    unlabeled = target is not None and target not in frame.columns
    if unlabeled:
        add(DataTestResult("labels", target, CheckStatus.WARN,
                           f"no labels: target column {target!r} is absent; a feature-only dataset, "
                           "compared on its features; add labels before training"))
    rows = len(frame)
    add(DataTestResult("rows", None,
                       CheckStatus.FAIL if rows < policy.min_rows else CheckStatus.PASS,
                       f"{rows} rows (minimum {policy.min_rows})", rows, policy.min_rows))

    # every column must be numeric for the bundled pipeline; name the offending value
    for col in frame.columns:
        s = frame[col]
        if not pd.api.types.is_numeric_dtype(s):
            example = non_numeric_example(s)
            add(DataTestResult("type", col, CheckStatus.FAIL,
                               f"column {col!r} is not numeric (dtype {s.dtype})"
                               + (f"; first bad value {example}" if example else "")))

    for col in frame.columns:
        frac = float(frame[col].isna().mean()) if rows else 0.0
        status = (CheckStatus.FAIL if frac > policy.max_missing_fraction_fail
                  else CheckStatus.WARN if frac > policy.max_missing_fraction_warn else CheckStatus.PASS)
        add(DataTestResult("missing", col, status,
                           f"{int(frame[col].isna().sum())} missing ({frac:.1%})", frac,
                           policy.max_missing_fraction_fail))

    if baseline is None:
        return results

    base_cols, cur_cols = list(baseline.columns), list(frame.columns)
    for col in base_cols:
        if col not in cur_cols and unlabeled and col == target:
            continue  # reported once by the "labels" check
        if col not in cur_cols:
            add(DataTestResult("schema", col, CheckStatus.FAIL, f"column {col!r} is missing (it is in the baseline)"))
        elif str(baseline[col].dtype) != str(frame[col].dtype):
            numeric_both = (pd.api.types.is_numeric_dtype(baseline[col]) and pd.api.types.is_numeric_dtype(frame[col]))
            add(DataTestResult("schema", col, CheckStatus.WARN if numeric_both else CheckStatus.FAIL,
                               f"dtype {frame[col].dtype} differs from the baseline's {baseline[col].dtype}"))
    for col in cur_cols:
        if col not in base_cols:
            add(DataTestResult("schema", col, CheckStatus.WARN, f"new column {col!r} (not in the baseline)"))
    if not any(r.check == "schema" for r in results):
        add(DataTestResult("schema", None, CheckStatus.PASS,
                           f"same {len(cur_cols)} feature columns and types as the baseline (no labels)"
                           if unlabeled and target in base_cols else
                           f"same {len(cur_cols)} columns and types as the baseline"))

    shared = [c for c in base_cols if c in cur_cols
              and pd.api.types.is_numeric_dtype(baseline[c]) and pd.api.types.is_numeric_dtype(frame[c])]
    for col in shared:
        b = baseline[col].astype(float).to_numpy()
        c = frame[col].astype(float).to_numpy()
        b_min, b_max, b_mean, b_std = np.nanmin(b), np.nanmax(b), np.nanmean(b), np.nanstd(b, ddof=1)
        c_min, c_max, c_mean, c_std = np.nanmin(c), np.nanmax(c), np.nanmean(c), np.nanstd(c, ddof=1)

        span = (b_max - b_min) or 1.0
        over = max(0.0, (b_min - c_min) / span, (c_max - b_max) / span)
        add(DataTestResult("range", col, CheckStatus.WARN if over > policy.range_tolerance else CheckStatus.PASS,
                           f"[{c_min:.4g}, {c_max:.4g}] vs baseline [{b_min:.4g}, {b_max:.4g}]",
                           over, policy.range_tolerance))

        sigma = abs(c_mean - b_mean) / b_std if b_std > 0 else (0.0 if c_mean == b_mean else math.inf)
        ratio = (c_std / b_std) if b_std > 0 else 1.0
        status = _status(sigma, policy.shift_sigma_warn, policy.shift_sigma_fail)
        if ratio > policy.std_ratio_fail or (ratio > 0 and 1 / ratio > policy.std_ratio_fail):
            status = CheckStatus.FAIL
        add(DataTestResult("shift_mean", col, status,
                           f"mean {c_mean:.4g} vs {b_mean:.4g} ({sigma:.2f} σ); std ratio {ratio:.2f}",
                           sigma, policy.shift_sigma_fail))

        value = psi(b, c)
        add(DataTestResult("psi", col, _status(value, policy.psi_warn, policy.psi_fail) if not math.isnan(value)
                           else CheckStatus.WARN, f"PSI {value:.3f}", value, policy.psi_fail))
    return results
