"""Local data assets: immutable versions under ``<workspace>/datasets/NAME/VERSION/``."""
from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Mapping

import pandas as pd

from ..datatests import LABELS_TAG, NO_LABELS, check_table, latest_passing, profile_of, summarize_file
from ..entities import CheckStatus, ColumnProfile, DatasetCheck, DatasetVersion, DataTestResult
from ..errors import InvalidInput, NotFound
from ..naming import check_name
from ..permissions import authorize, canonical
from ..policy import Policy
from . import audit
from ..tables import TableSummary, baseline_columns, count_bins, iter_chunks, readable, write_parquet
from .db import Database, parse_ts, utcnow

MAX_BASELINE_RETRIES = 5


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _to_version(row, root: Path) -> DatasetVersion:
    cols = tuple(ColumnProfile(**c) for c in json.loads(row["profile_json"]))
    return DatasetVersion(
        name=row["name"], version=row["version"], created_at=parse_ts(row["created_at"]),
        created_by=row["created_by"], description=row["description"], source=row["source"],
        format=row["format"], rows=row["rows"], columns=cols, baseline_version=row["baseline_version"],
        tests_status=CheckStatus(row["tests_status"]), sha256=row["sha256"], uri=str(root / row["path"]),
        tags=json.loads(row["tags_json"]),
    )


class LocalDatasets:
    def __init__(self, db: Database, root: Path, policy: Policy):
        self.db, self.root, self.policy = db, Path(root), policy

    def names(self) -> list[str]:
        return [r[0] for r in self.db.query("SELECT DISTINCT name FROM datasets ORDER BY name")]

    def versions(self, name: str) -> list[DatasetVersion]:
        rows = self.db.query("SELECT * FROM datasets WHERE name = ? ORDER BY version DESC", (name,))
        if not rows:
            raise NotFound(f"dataset {name!r} does not exist",
                           hint=f"Known datasets: {', '.join(self.names()) or 'none'}.")
        return [_to_version(r, self.root) for r in rows]

    def all_versions(self) -> list[DatasetVersion]:
        return [_to_version(r, self.root) for r in
                self.db.query("SELECT * FROM datasets ORDER BY created_at DESC, name, version DESC")]

    def get(self, name: str, version: int | None = None) -> DatasetVersion:
        if version is None:
            return self.versions(name)[0]
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise InvalidInput(f"dataset version must be a whole number, got {version!r}") from None
        row = self.db.one("SELECT * FROM datasets WHERE name = ? AND version = ?", (name, version))
        if row is None:
            known = [v.version for v in self.versions(name)]  # NotFound for an unknown name
            raise NotFound(f"dataset {name}:{version} does not exist",
                           hint=f"Versions of {name}: {', '.join(map(str, known))}.")
        return _to_version(row, self.root)

    def latest_passing(self, name: str, *, labelled: bool = False) -> DatasetVersion | None:
        return latest_passing(self.versions(name), self.policy.target, labelled=labelled)

    def data_tests(self, name: str, version: int) -> list[DataTestResult]:
        version = self.get(name, version).version
        rows = self.db.query("SELECT * FROM data_tests WHERE name = ? AND version = ? ORDER BY seq",
                             (name, version))
        return [DataTestResult(r["check_name"], r["column_name"], CheckStatus(r["status"]), r["detail"],
                               r["value"], r["threshold"]) for r in rows]

    def load(self, name: str, version: int | None = None) -> pd.DataFrame:
        dv = self.get(name, version)
        return pd.read_parquet(Path(dv.uri) / "data.parquet")

    def register(self, name: str, source: Path, *, actor: str, description: str = "",
                 original_name: str | None = None, tags: Mapping[str, str] | None = None) -> DatasetVersion:
        """Profile, test and store a file as the next version. The file is read a chunk at a
        time (memory bounded whatever its size) and everything slow — reading, the Parquet copy,
        the data tests — happens before the write transaction, which only numbers the version,
        moves its folder in place and inserts its rows."""
        role = authorize(self.policy, actor, "register_dataset")
        check_name(name)
        source = Path(source)
        original = original_name or source.name
        summary, fmt = summarize_file(source, original)  # InvalidInput before anything is written

        staging = self.root / "datasets" / name / f".incoming-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        final: Path | None = None
        try:
            shutil.copyfile(source, staging / f"source.{fmt}")
            stored = staging / "data.parquet"
            with readable(original, fmt):
                write_parquet(iter_chunks(source, fmt, dtypes=summary.dtypes() if fmt == "csv" else None), stored)
            sha = _sha256(source)
            cols = profile_of(summary)
            tags = {str(k): str(v) for k, v in (tags or {}).items() if k != LABELS_TAG}
            if self.policy.target not in summary.columns:  # said by the data, not by the caller
                tags[LABELS_TAG] = NO_LABELS

            for attempt in range(MAX_BASELINE_RETRIES + 1):
                # Optimistic: test outside the lock, then commit if the baseline did not move. A
                # registration that keeps losing that race tests under the lock the last time.
                under_lock = attempt == MAX_BASELINE_RETRIES
                prev = _baseline(self.db.conn, name)
                tests = None if under_lock else self._data_tests(summary, stored, "parquet", prev)
                with self.db.write() as conn:
                    current = _baseline(conn, name)
                    if under_lock:
                        prev, tests = current, self._data_tests(summary, stored, "parquet", current)
                    elif _version_of(current) != _version_of(prev):
                        continue  # a version registered meanwhile is the baseline now: test against it
                    status = CheckStatus.worst(t.status for t in tests)
                    version = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM datasets WHERE name = ?",
                                           (name,)).fetchone()[0]
                    final = self.root / "datasets" / name / str(version)
                    shutil.rmtree(final, ignore_errors=True)  # left by a process killed before its commit; no row owns it
                    staging.rename(final)
                    conn.execute(
                        "INSERT INTO datasets (name, version, created_at, created_by, description, source, format,"
                        " path, sha256, rows, profile_json, baseline_version, tests_status, tags_json)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (name, version, utcnow(), canonical(actor), description, original, fmt,
                         str(final.relative_to(self.root)), sha, summary.rows, json.dumps([c.__dict__ for c in cols]),
                         _version_of(prev), status.value, json.dumps(tags)))
                    conn.executemany(
                        "INSERT INTO data_tests (name, version, seq, check_name, column_name, status, detail, value,"
                        " threshold) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        [(name, version, i, t.check, t.column, t.status.value, t.detail,
                          _finite(t.value), _finite(t.threshold)) for i, t in enumerate(tests)])
                    audit.record(conn, actor, "dataset.register", f"{name}:{version}", role=role,
                                 after={"rows": summary.rows, "tests": status.value, "source": original})
                    break
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            if final is not None:
                shutil.rmtree(final, ignore_errors=True)
            raise
        return self.get(name, version)

    def check(self, name: str, source: Path, *, original_name: str | None = None) -> DatasetCheck:
        """What ``register`` would test, against the same baseline, reading ``source`` where it is:
        nothing is copied into the workspace and nothing is written."""
        self.versions(name)  # NotFound for an unknown dataset
        source = Path(source)
        original = original_name or source.name
        if not source.is_file():
            raise InvalidInput(f"{original}: no such file", hint="Choose an existing CSV or Parquet file.")
        summary, fmt = summarize_file(source, original)  # InvalidInput if it cannot be read
        prev = _baseline(self.db.conn, name)
        with readable(original, fmt):
            tests = self._data_tests(summary, source, fmt, prev)
        return DatasetCheck(name=name, source=original, format=fmt, rows=summary.rows,
                            columns=profile_of(summary), baseline_version=_version_of(prev), tests=tuple(tests))

    def _data_tests(self, summary: TableSummary, data: Path, fmt: str, prev) -> list[DataTestResult]:
        """The new data's checks, against ``prev`` (its baseline) when there is one: the baseline
        read a column at a time, the new data's PSI counts read again from ``data`` (its staged
        Parquet copy when registering, the file itself when only checking)."""
        baseline = None
        if prev is not None:
            baseline = baseline_columns(self.root / prev["path"] / "data.parquet",
                                        lambda col, _: col in summary.columns and summary.columns[col].numeric)
        dtypes = summary.dtypes() if fmt == "csv" else None

        def count(bins):
            return count_bins(iter_chunks(data, fmt, dtypes=dtypes, columns=list(bins)), bins) if bins else {}
        return check_table(summary, baseline, self.policy.data_tests, self.policy.target, count)


def _baseline(conn, name: str):
    """The newest version that did not fail its own tests: a broken upload must not become the
    reference for the next one; and one with labels when there is one (feature-only versions are
    live inputs, not training data)."""
    candidates = conn.execute("SELECT version, path, tags_json FROM datasets WHERE name = ?"
                              " AND tests_status != ? ORDER BY version DESC", (name, CheckStatus.FAIL.value)).fetchall()
    return next((r for r in candidates if json.loads(r["tags_json"]).get(LABELS_TAG) != NO_LABELS),
                candidates[0] if candidates else None)


def _version_of(row) -> int | None:
    return row["version"] if row is not None else None


def _finite(x):
    if x is None:
        return None
    x = float(x)
    return x if x == x and abs(x) != float("inf") else None
