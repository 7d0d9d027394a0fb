"""Tables larger than memory: read in chunks, summarised column by column, copied to Parquet.

A dataset file is read ``CHUNK_ROWS`` rows at a time (pandas for CSV, pyarrow
batches for Parquet), so registering a 200 MB CSV holds a chunk, not the table:

* ``TableSummary`` folds the chunks into per-column counts, missing values, min,
  max, mean and variance (Chan's parallel update), and the column types a
  whole-file read would have inferred (an ``int64`` chunk and a ``float64`` one
  make a ``float64`` column; any text makes a text column);
* ``write_parquet`` reads the file again with those types fixed and appends each
  chunk to one Parquet file;
* ``baseline_columns`` reads an earlier version's Parquet one column at a time.

The checks themselves (``services.datatests``) only see these summaries.
"""
from __future__ import annotations

import csv
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .errors import InvalidInput

CHUNK_ROWS = 100_000
PSI_BINS = 10


# --- reading in chunks ---------------------------------------------------------------

@contextmanager
def readable(name: str, fmt: str) -> Iterator[None]:
    """Parser errors as ``InvalidInput`` naming the file and the first line of the reason."""
    try:
        yield
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pa.ArrowException, csv.Error, UnicodeDecodeError,
            ValueError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InvalidInput(f"{name}: could not be read as {fmt.upper()}: {first}",
                           hint="Check the delimiter, the header row and that every row has the same number of fields.") from e


def iter_chunks(path: Path, fmt: str, dtypes: Mapping[str, object] | None = None,
                columns: list[str] | None = None) -> Iterator[pd.DataFrame]:
    """The table in chunks of ``CHUNK_ROWS`` rows, column names as text; ``dtypes`` fixes the
    CSV columns' types (the second read), ``columns`` reads only those (Parquet)."""
    if fmt == "parquet":
        for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_ROWS, columns=columns):
            chunk = batch.to_pandas()
            chunk.columns = [str(c) for c in chunk.columns]
            yield chunk
        return
    with pd.read_csv(path, on_bad_lines="error", chunksize=CHUNK_ROWS, dtype=dict(dtypes) if dtypes else None,
                     usecols=columns) as reader:
        yield from reader


# --- summaries -------------------------------------------------------------------------

def promote(a, b):
    """The type of a column whose chunks were read as ``a`` and ``b`` (what one read would say)."""
    if a == b:
        return a
    plain = (pd.api.types.is_numeric_dtype(d) and not pd.api.types.is_bool_dtype(d) for d in (a, b))
    if all(plain):
        return np.result_type(a, b)
    text = [d for d in (a, b) if not pd.api.types.is_numeric_dtype(d) and d != np.dtype(object)]
    return text[0] if text else np.dtype(object)


def non_numeric_example(s: pd.Series) -> str | None:
    """The first value of an object column that is not a number, with its row."""
    coerced = pd.to_numeric(s, errors="coerce")
    bad = s[coerced.isna() & s.notna()]
    if bad.empty:
        return None
    return f"{bad.iloc[0]!r} at row {int(bad.index[0]) + 1}"


@dataclass(frozen=True)
class Stats:
    min: float
    max: float
    mean: float
    std: float          # ddof=1; nan with fewer than two values


class ColumnSummary:
    """One column across chunks: type, missing values, and (numbers) moments and range."""

    def __init__(self, name: str):
        self.name = name
        self.dtype = None
        self.missing = 0
        self.count = 0                     # numbers folded into the moments
        self.min = self.max = self.mean = self.m2 = math.nan
        self.example: str | None = None    # the first value that is not a number (text columns)

    def add(self, s: pd.Series) -> None:
        self.dtype = s.dtype if self.dtype is None else promote(self.dtype, s.dtype)
        self.missing += int(s.isna().sum())
        if pd.api.types.is_numeric_dtype(s.dtype):
            self._fold(s.to_numpy(dtype=float, na_value=np.nan))
        elif self.example is None:
            self.example = non_numeric_example(s)

    def _fold(self, values: np.ndarray) -> None:
        values = values[~np.isnan(values)]
        n = len(values)
        if not n:
            return
        mean = float(values.mean())
        dev = values - mean
        m2 = float(np.dot(dev, dev))
        lo, hi = float(values.min()), float(values.max())
        if not self.count:
            self.count, self.mean, self.m2, self.min, self.max = n, mean, m2, lo, hi
            return
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count, self.min, self.max = total, min(self.min, lo), max(self.max, hi)

    @property
    def numeric(self) -> bool:
        return self.dtype is not None and pd.api.types.is_numeric_dtype(self.dtype)

    @property
    def averaged(self) -> bool:
        """Numbers that have a mean (booleans are numeric to pandas but are not averaged)."""
        return self.numeric and not pd.api.types.is_bool_dtype(self.dtype)

    def stats(self) -> Stats | None:
        if not self.numeric or not self.count:
            return None
        std = math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else math.nan
        return Stats(self.min, self.max, self.mean, std)


class TableSummary:
    """Rows and per-column summaries of a table seen chunk by chunk."""

    def __init__(self):
        self.rows = 0
        self.columns: dict[str, ColumnSummary] = {}

    @classmethod
    def of(cls, chunks: Iterable[pd.DataFrame]) -> "TableSummary":
        summary = cls()
        for chunk in chunks:
            summary.add(chunk)
        return summary

    def add(self, chunk: pd.DataFrame) -> None:
        if not self.columns:
            self.columns = {name: ColumnSummary(name) for name in chunk.columns}
        self.rows += len(chunk)
        for i, name in enumerate(chunk.columns):
            self.columns[name].add(chunk.iloc[:, i])

    @property
    def names(self) -> list[str]:
        return list(self.columns)

    def dtypes(self) -> dict[str, object]:
        return {name: c.dtype for name, c in self.columns.items()}


# --- PSI in pieces: bins from the baseline, counts from the current data chunk by chunk -----

@dataclass(frozen=True)
class PsiBins:
    """Baseline-quantile bins and the baseline's share in each; a constant baseline has
    two bins: equal to ``constant`` or not."""
    edges: np.ndarray | None
    shares: np.ndarray
    constant: float | None = None

    @classmethod
    def of(cls, baseline: np.ndarray, bins: int = PSI_BINS) -> "PsiBins | None":
        baseline = baseline[~np.isnan(baseline)]
        if len(baseline) == 0:
            return None
        edges = np.unique(np.quantile(baseline, np.linspace(0, 1, bins + 1)))
        if len(edges) < 2:
            return cls(None, np.array([1.0, 0.0]), float(baseline[0]))
        edges[0], edges[-1] = -np.inf, np.inf
        return cls(edges, np.histogram(baseline, edges)[0] / len(baseline))

    def count(self, values: np.ndarray) -> np.ndarray:
        values = values[~np.isnan(values)]
        if self.edges is None:
            same = int(np.count_nonzero(values == self.constant))
            return np.array([same, len(values) - same])
        return np.histogram(values, self.edges)[0]

    def psi(self, counts: np.ndarray) -> float:
        """< 0.1 stable, 0.1–0.25 moderate shift, > 0.25 significant shift; nan without data."""
        total = counts.sum()
        if not total:
            return float("nan")
        eps = 1e-4
        b, c = np.clip(self.shares, eps, None), np.clip(counts / total, eps, None)
        return float(np.sum((c - b) * np.log(c / b)))


def count_bins(chunks: Iterable[pd.DataFrame], bins: Mapping[str, PsiBins]) -> dict[str, np.ndarray]:
    """Per column, the current values' counts in the baseline's bins."""
    counts = {name: np.zeros(len(b.shares), dtype=np.int64) for name, b in bins.items()}
    for chunk in chunks:
        for name, b in bins.items():
            counts[name] += b.count(chunk[name].to_numpy(dtype=float, na_value=np.nan))
    return counts


@dataclass(frozen=True)
class BaselineColumn:
    """What the data tests need of a baseline column: its type and, for numbers, range,
    moments and PSI bins."""
    dtype: object
    stats: Stats | None = None
    bins: PsiBins | None = None

    @property
    def numeric(self) -> bool:
        return pd.api.types.is_numeric_dtype(self.dtype)

    @classmethod
    def of(cls, s: pd.Series) -> "BaselineColumn":
        if not pd.api.types.is_numeric_dtype(s.dtype):
            return cls(s.dtype)
        summary = ColumnSummary(str(s.name))
        summary.add(s)
        return cls(s.dtype, summary.stats(), PsiBins.of(s.to_numpy(dtype=float, na_value=np.nan)))


def baseline_columns(path: Path, wanted: Callable[[str, object], bool]) -> dict[str, BaselineColumn]:
    """A stored version's columns (its ``data.parquet``), read one at a time: the ones ``wanted``
    (name, dtype) summarised in full, the others by type only."""
    dtypes = pq.read_schema(path).empty_table().to_pandas().dtypes
    out = {}
    for name, dtype in dtypes.items():
        if wanted(str(name), dtype) and pd.api.types.is_numeric_dtype(dtype):
            out[str(name)] = BaselineColumn.of(pq.read_table(path, columns=[name]).column(0).to_pandas())
        else:
            out[str(name)] = BaselineColumn(dtype)
    return out


# --- writing ---------------------------------------------------------------------------

def write_parquet(chunks: Iterable[pd.DataFrame], dest: Path) -> None:
    """Append the chunks to one Parquet file (the first chunk's schema; object columns as text,
    missing values kept missing)."""
    writer = None
    try:
        for chunk in chunks:
            for col in chunk.columns:
                if chunk[col].dtype == object:
                    chunk[col] = chunk[col].astype("string")
            if writer is None:
                schema = pa.Schema.from_pandas(chunk, preserve_index=False)
                writer = pq.ParquetWriter(dest, schema)
            writer.write_table(pa.Table.from_pandas(chunk, schema=schema, preserve_index=False))
    finally:
        if writer is not None:
            writer.close()
