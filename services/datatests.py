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
from typing import Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from .entities import CheckStatus, ColumnProfile, DatasetVersion, DataTestResult
from .errors import InvalidInput
from .policy import DataTestPolicy
from .tables import PSI_BINS, BaselineColumn, PsiBins, TableSummary, count_bins, iter_chunks, readable
from .versions import newest_first

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

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


def latest_passing(versions: Iterable[DatasetVersion], target: str, *,
                   labelled: bool = False) -> DatasetVersion | None:
    """The newest of ``versions`` whose data tests ran and did not fail (pass or warn): what "latest"
    means wherever a version is picked by default. With ``labelled``, the newest such version
    that has the ``target`` column (one that can be trained on). None when none qualifies."""
    for dv in newest_first(versions):   # text versions (Azure allows them) after numbers, by creation time
        if dv.tested and not dv.unreadable and dv.tests_status != CheckStatus.FAIL \
                and (not labelled or has_labels(dv, target)):
            return dv
    return None


def baseline_of(versions: Iterable[DatasetVersion], target: str) -> DatasetVersion | None:
    """What the data tests of a new version compare with: the latest passing version with labels,
    else the latest passing one (feature-only versions are live inputs, not training data)."""
    versions = list(versions)
    return latest_passing(versions, target, labelled=True) or latest_passing(versions, target)


def no_passing_version(name: str, target: str, labelled: bool) -> str:
    return (f"no version of dataset {name!r} passed its data tests"
            + (f" with labels (target column {target!r})" if labelled else ""))


def read_table(path: Path, original_name: str | None = None) -> tuple[pd.DataFrame, str]:
    """Parse a CSV or Parquet file; ``InvalidInput`` with the reason if it cannot be read."""
    name = original_name or Path(path).name
    fmt = _format(name)
    with readable(name, fmt):
        if fmt == "parquet":
            frame = pd.read_parquet(path)
        else:
            _check_csv_shape(path, name)
            frame = pd.read_csv(path, on_bad_lines="error")
    frame.columns = _checked_columns(name, list(frame.columns), len(frame))
    return frame, fmt


def summarize_file(path: Path, original_name: str | None = None) -> tuple[TableSummary, str]:
    """What ``read_table`` checks, and the table's summary, reading the file a chunk at a time
    (memory bounded by the chunk, not the file); ``InvalidInput`` if it cannot be read."""
    name = original_name or Path(path).name
    fmt = _format(name)
    with readable(name, fmt):
        if fmt == "csv":
            _check_csv_shape(path, name)
        summary = TableSummary()
        for chunk in iter_chunks(path, fmt):
            if not summary.columns:
                _checked_columns(name, list(chunk.columns), 1)  # before reading the rest
            summary.add(chunk)
    _checked_columns(name, summary.names, summary.rows)
    return summary, fmt


def _format(name: str) -> str:
    fmt = FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise InvalidInput(f"{name}: unsupported file type; upload a .csv or .parquet file")
    return fmt


def _check_csv_shape(path: Path, name: str) -> None:
    problem = csv_shape_problem(path)
    if problem:
        raise InvalidInput(f"{name}: {problem}",
                           hint="Every row needs as many fields as the header, and every column a unique name.")


def _checked_columns(name: str, columns: list, rows: int) -> list[str]:
    if rows == 0 or not columns:
        raise InvalidInput(f"{name}: the file has no rows", hint="Upload a file with a header row and data rows.")
    unnamed = [c for c in columns if str(c).startswith("Unnamed:")]
    if unnamed:
        raise InvalidInput(f"{name}: {len(unnamed)} column(s) have no header name",
                           hint="Every column needs a name in the header row.")
    dupes = sorted({str(c) for c in columns if columns.count(c) > 1})
    if dupes:
        raise InvalidInput(f"{name}: duplicate column names: {', '.join(dupes)}")
    return [str(c) for c in columns]


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
    return profile_of(TableSummary.of([frame]))


def profile_of(summary: TableSummary) -> tuple[ColumnProfile, ...]:
    cols = []
    for c in summary.columns.values():
        stats = c.stats() if c.averaged else None
        if stats:
            cols.append(ColumnProfile(c.name, str(c.dtype), c.missing, _num(stats.min), _num(stats.max),
                                      _num(stats.mean), _num(stats.std)))
        else:
            cols.append(ColumnProfile(c.name, str(c.dtype), c.missing))
    return tuple(cols)


def psi(baseline: np.ndarray, current: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index with baseline-quantile bins.
    < 0.1 stable, 0.1–0.25 moderate shift, > 0.25 significant shift."""
    edges = PsiBins.of(np.asarray(baseline, dtype=float), bins)
    return edges.psi(edges.count(np.asarray(current, dtype=float))) if edges else float("nan")


def _status(value: float, warn: float, fail: float) -> CheckStatus:
    if value > fail:
        return CheckStatus.FAIL
    if value > warn:
        return CheckStatus.WARN
    return CheckStatus.PASS


def run_data_tests(frame: pd.DataFrame, baseline: pd.DataFrame | None,
                   policy: DataTestPolicy, target: str | None = None) -> list[DataTestResult]:
    """``check_table`` on two frames in memory."""
    base = {str(c): BaselineColumn.of(baseline[c]) for c in baseline.columns} if baseline is not None else None
    return check_table(TableSummary.of([frame]), base, policy, target, lambda bins: count_bins([frame], bins))


def check_table(current: TableSummary, baseline: Mapping[str, BaselineColumn] | None, policy: DataTestPolicy,
                target: str | None, count: Callable[[dict[str, PsiBins]], dict[str, np.ndarray]]) -> list[DataTestResult]:
    """Checks of a table (its summary) on its own and, when given, against ``baseline``.
    ``count`` reads the table again for the PSI: its values' counts in the baseline's bins.

    With ``target`` (the label column), a table without it is feature-only: one
    ``labels`` check warns "no labels" instead of a failing schema check, and the
    rest compares its features."""
    results: list[DataTestResult] = []
    add = results.append
    columns = current.columns
    unlabeled = target is not None and target not in columns
    if unlabeled:
        add(DataTestResult("labels", target, CheckStatus.WARN,
                           f"no labels: target column {target!r} is absent; a feature-only dataset, "
                           "compared on its features; add labels before training"))
    rows = current.rows
    add(DataTestResult("rows", None,
                       CheckStatus.FAIL if rows < policy.min_rows else CheckStatus.PASS,
                       f"{rows} rows (minimum {policy.min_rows})", rows, policy.min_rows))

    # every column must be numeric for the bundled pipeline; name the offending value
    for col, c in columns.items():
        if not c.numeric:
            add(DataTestResult("type", col, CheckStatus.FAIL,
                               f"column {col!r} is not numeric (dtype {c.dtype})"
                               + (f"; first bad value {c.example}" if c.example else "")))

    for col, c in columns.items():
        frac = c.missing / rows if rows else 0.0
        status = (CheckStatus.FAIL if frac > policy.max_missing_fraction_fail
                  else CheckStatus.WARN if frac > policy.max_missing_fraction_warn else CheckStatus.PASS)
        add(DataTestResult("missing", col, status, f"{c.missing} missing ({frac:.1%})", frac,
                           policy.max_missing_fraction_fail))

    if baseline is None:
        return results

    base_cols, cur_cols = list(baseline), list(columns)
    for col in base_cols:
        if col not in cur_cols and unlabeled and col == target:
            continue  # reported once by the "labels" check
        if col not in cur_cols:
            add(DataTestResult("schema", col, CheckStatus.FAIL, f"column {col!r} is missing (it is in the baseline)"))
        elif str(baseline[col].dtype) != str(columns[col].dtype):
            numeric_both = baseline[col].numeric and columns[col].numeric
            add(DataTestResult("schema", col, CheckStatus.WARN if numeric_both else CheckStatus.FAIL,
                               f"dtype {columns[col].dtype} differs from the baseline's {baseline[col].dtype}"))
    for col in cur_cols:
        if col not in base_cols:
            add(DataTestResult("schema", col, CheckStatus.WARN, f"new column {col!r} (not in the baseline)"))
    if not any(r.check == "schema" for r in results):
        add(DataTestResult("schema", None, CheckStatus.PASS,
                           f"same {len(cur_cols)} feature columns and types as the baseline (no labels)"
                           if unlabeled and target in base_cols else
                           f"same {len(cur_cols)} columns and types as the baseline"))

    shared = [c for c in base_cols if c in cur_cols and baseline[c].numeric and columns[c].numeric]
    counts = count({c: baseline[c].bins for c in shared if baseline[c].bins is not None})
    for col in shared:
        b, c = baseline[col].stats, columns[col].stats()
        if b is None or c is None:  # no values on one side: nothing to compare but the PSI's verdict
            add(DataTestResult("psi", col, CheckStatus.WARN, "PSI nan", math.nan, policy.psi_fail))
            continue
        span = (b.max - b.min) or 1.0
        over = max(0.0, (b.min - c.min) / span, (c.max - b.max) / span)
        add(DataTestResult("range", col, CheckStatus.WARN if over > policy.range_tolerance else CheckStatus.PASS,
                           f"[{c.min:.4g}, {c.max:.4g}] vs baseline [{b.min:.4g}, {b.max:.4g}]",
                           over, policy.range_tolerance))

        sigma = abs(c.mean - b.mean) / b.std if b.std > 0 else (0.0 if c.mean == b.mean else math.inf)
        ratio = (c.std / b.std) if b.std > 0 else 1.0
        status = _status(sigma, policy.shift_sigma_warn, policy.shift_sigma_fail)
        if ratio > policy.std_ratio_fail or (ratio > 0 and 1 / ratio > policy.std_ratio_fail):
            status = CheckStatus.FAIL
        add(DataTestResult("shift_mean", col, status,
                           f"mean {c.mean:.4g} vs {b.mean:.4g} ({sigma:.2f} σ); std ratio {ratio:.2f}",
                           sigma, policy.shift_sigma_fail))

        value = baseline[col].bins.psi(counts[col])
        add(DataTestResult("psi", col, _status(value, policy.psi_warn, policy.psi_fail) if not math.isnan(value)
                           else CheckStatus.WARN, f"PSI {value:.3f}", value, policy.psi_fail))
    return results
