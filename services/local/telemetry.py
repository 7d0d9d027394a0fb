"""Telemetry and logs of the local endpoints (``TelemetryService``, ``LogService``).

Aggregates come from the per-minute rollups of ``telemetry_store`` for the
whole minutes of a window and from the raw request rows for its ragged edges
(and for windows binned finer than a minute), so counts are exact for any
window; latency percentiles come from the rollups' histograms (±2.5 %).
"""
from __future__ import annotations

import json
import math
import os
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..entities import ErrorGroup, LogLine, RequestDetail, RequestRecord, TimeWindow, VersionStats
from ..errors import Conflict, InvalidInput, NotFound
from ..telemetry import per_minute
from .logfmt import REQUEST_ID_SUFFIX, line_time
from .telemetry_store import BUCKETS, HIST_DTYPE, bucket_of, bucket_value, open_telemetry

QUANTILES = (0.50, 0.95, 0.99)
MAX_SEARCH_TEXT = 500
MAX_TAIL = 5000


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


class _Cells:
    """Counts and latency histograms per (group key, bin)."""

    def __init__(self, n_bins: int):
        self.n_bins = n_bins
        self.keys: dict[tuple, int] = {}
        self.counts: dict[int, np.ndarray] = {}   # key index -> (n_bins, 3): requests, failures, client errors
        self.hists: dict[int, np.ndarray] = {}    # key index -> (n_bins, BUCKETS)

    def _index(self, key: tuple) -> int:
        i = self.keys.get(key)
        if i is None:
            i = self.keys[key] = len(self.keys)
            self.counts[i] = np.zeros((self.n_bins, 3), dtype=np.int64)
            self.hists[i] = np.zeros((self.n_bins, BUCKETS), dtype=np.int64)
        return i

    def add_rollups(self, key: tuple, bins: np.ndarray, counts: np.ndarray, blobs: list[bytes]) -> None:
        """Rollup rows of one group: ``counts`` (rows, 3), ``blobs`` their sparse histograms."""
        i = self._index(key)
        for j in range(3):
            self.counts[i][:, j] += np.bincount(bins, weights=counts[:, j], minlength=self.n_bins).astype(np.int64)
        pairs = np.frombuffer(b"".join(blobs), dtype=HIST_DTYPE)
        pair_bin = np.repeat(bins, np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)) // HIST_DTYPE.itemsize)
        flat = np.bincount(pair_bin * BUCKETS + pairs["bucket"], weights=pairs["count"], minlength=self.n_bins * BUCKETS)
        self.hists[i] += flat.astype(np.int64).reshape(self.n_bins, BUCKETS)  # float64 sums of counts: exact

    def add_raw(self, keys: list[tuple], bins: np.ndarray, status: np.ndarray, latency: np.ndarray) -> None:
        rows = np.array([self._index(k) for k in keys], dtype=np.int64)
        failures = (status >= 500) | (status == 0)
        client = (status >= 400) & (status < 500)
        buckets = bucket_of(latency)
        for i in np.unique(rows):
            mine = rows == i
            np.add.at(self.counts[i], bins[mine],
                      np.stack([np.ones(mine.sum(), dtype=np.int64), failures[mine], client[mine]], axis=1))
            np.add.at(self.hists[i], (bins[mine], buckets[mine]), 1)

    def items(self) -> Iterator[tuple[tuple, np.ndarray, np.ndarray]]:
        for key, i in self.keys.items():
            yield key, self.counts[i], self.hists[i]


def percentiles(hist: np.ndarray) -> np.ndarray:
    """p50/p95/p99 per row of a (rows, BUCKETS) histogram matrix; NaN where a row is empty."""
    hist = np.atleast_2d(hist)
    cum = hist.cumsum(axis=1)
    total = cum[:, -1]
    out = np.full((len(hist), len(QUANTILES)), np.nan)
    for j, q in enumerate(QUANTILES):
        rank = np.maximum(np.ceil(q * total), 1)
        idx = (cum >= rank[:, None]).argmax(axis=1)
        out[:, j] = np.where(total > 0, bucket_value(idx), np.nan)
    return out


class LocalTelemetry:
    """``TelemetryService`` over ``<workspace>/telemetry.db``."""

    def __init__(self, root: Path, logs: "LocalLogs"):
        self.db = open_telemetry(root)
        self.logs = logs

    # --- aggregates -------------------------------------------------------------

    def _where_endpoint(self, endpoint: str | None) -> tuple[str, tuple]:
        """``endpoint = ?``, or for all endpoints ``endpoint IN (every endpoint stored)``: every table's
        index starts with (endpoint, time), and a bare time range would read the whole table."""
        names = (endpoint,) if endpoint else tuple(r[0] for r in self.db.query(
            "WITH RECURSIVE e(name) AS (SELECT MIN(endpoint) FROM requests UNION ALL"
            " SELECT (SELECT MIN(endpoint) FROM requests WHERE endpoint > name) FROM e WHERE name IS NOT NULL)"
            " SELECT name FROM e WHERE name IS NOT NULL"))  # a skip scan of the index: one probe per endpoint
        return f"endpoint IN ({', '.join('?' * len(names))}) AND ", names

    def _where_rows(self, endpoint: str | None, lo: float, hi: float) -> tuple[str, tuple]:
        """The endpoint condition for reading whole request rows of ``[lo, hi)``: through the index, or
        when the range holds a large part of the table (a week of a week's data) by reading the table
        straight through (``+endpoint`` turns the index off), which beats a b-tree seek per row."""
        where, params = self._where_endpoint(endpoint)
        if hi - lo > 3600:
            in_range = self.db.one(f"SELECT SUM(requests) FROM rollup_minute WHERE {where}minute >= ? AND minute < ?",
                                   (*params, lo, hi))[0] or 0
            stored = self.db.one("SELECT MAX(id) FROM requests")[0] or 0  # ids only grow: about the rows stored
            if in_range * 5 > stored:
                return "+" + where, params
        return where, params

    def _cells(self, window: TimeWindow, endpoint: str | None, by_deployment: bool, binned: bool) -> tuple[_Cells, float]:
        start, end = _epoch(window.start), _epoch(window.end)
        size = window.bin_seconds if binned else max(end - start, 1.0)
        origin = math.floor(start / size) * size if binned else start  # bins aligned like KQL's bin()
        n_bins = max(1, math.ceil((end - origin) / size)) if binned else 1
        cells = _Cells(n_bins)
        # whole minutes from the rollups when bins are whole minutes; the ragged edges from raw rows
        first_minute, last_minute = math.ceil(start / 60) * 60, math.floor(end / 60) * 60
        use_rollups = (not binned or window.bin_seconds % 60 == 0) and first_minute < last_minute
        raw_ranges = [(start, first_minute), (last_minute, end)] if use_rollups else [(start, end)]
        where_ep, params_ep = self._where_endpoint(endpoint)

        def key(ep, dep, model):
            return (ep, dep or None, model or None) if by_deployment else (ep, model or None)

        if use_rollups:
            # group by group, so that the ~10,000 rows per week and group come back as numbers and blobs only
            cursor = self.db.conn.cursor()
            cursor.row_factory = None
            groups = cursor.execute(
                f"SELECT DISTINCT endpoint, deployment, model FROM rollup_minute"
                f" WHERE {where_ep}minute >= ? AND minute < ?", (*params_ep, first_minute, last_minute)).fetchall()
            for ep, dep, model in groups:
                rows = cursor.execute(
                    "SELECT minute, requests, failures, client_errors, hist FROM rollup_minute WHERE endpoint = ?"
                    " AND minute >= ? AND minute < ? AND deployment = ? AND model = ?",
                    (ep, first_minute, last_minute, dep, model)).fetchall()
                minutes, requests, failures, client, blobs = zip(*rows)
                bins = ((np.array(minutes, dtype=float) - origin) // size).astype(np.int64)
                counts = np.array([requests, failures, client], dtype=np.int64).T
                cells.add_rollups(key(ep, dep, model), bins, counts, list(blobs))
        for lo, hi in raw_ranges:
            if hi <= lo:
                continue
            rows = self.db.query(
                f"SELECT ts, endpoint, deployment, model, status, latency_ms FROM requests"
                f" WHERE {where_ep}ts >= ? AND ts < ?", (*params_ep, lo, hi))
            if rows:
                ts = np.fromiter((r[0] for r in rows), dtype=float, count=len(rows))
                bins = np.minimum(((ts - origin) // size).astype(np.int64), n_bins - 1)
                status = np.fromiter((r[4] for r in rows), dtype=np.int64, count=len(rows))
                latency = np.fromiter((r[5] for r in rows), dtype=float, count=len(rows))
                cells.add_raw([key(r[1], r[2], r[3]) for r in rows], bins, status, latency)
        return cells, origin

    def stats(self, window: TimeWindow, endpoint: str | None = None) -> list[VersionStats]:
        cells, _ = self._cells(window, endpoint, by_deployment=True, binned=False)
        out = []
        for (ep, deployment, model), counts, hist in cells.items():
            requests, failures, client = (int(v) for v in counts.sum(axis=0))
            p50, p95, p99 = (None if math.isnan(v) else float(v) for v in percentiles(hist.sum(axis=0))[0])
            out.append(VersionStats(endpoint=ep, deployment=deployment, model=model, requests=requests,
                                    failures=failures, client_errors=client, p50_ms=p50, p95_ms=p95, p99_ms=p99))
        return sorted(out, key=lambda s: (s.endpoint, -s.requests))

    def series(self, window: TimeWindow, endpoint: str | None = None) -> pd.DataFrame:
        cells, origin = self._cells(window, endpoint, by_deployment=False, binned=True)
        frames = []
        for (ep, model), counts, hist in cells.items():
            present = counts[:, 0] > 0
            if not present.any():
                continue
            idx = np.flatnonzero(present)
            pct = percentiles(hist[idx])
            frames.append(pd.DataFrame({
                "bin": pd.to_datetime(origin + idx * window.bin_seconds, unit="s", utc=True),
                "endpoint": ep, "model": model or "(none)",
                "requests": counts[idx, 0], "failures": counts[idx, 1], "client_errors": counts[idx, 2],
                "p50_ms": pct[:, 0], "p95_ms": pct[:, 1], "p99_ms": pct[:, 2]}))
        columns = ["bin", "endpoint", "model", "requests", "failures", "client_errors", "rpm", "failure_rate",
                   "p50_ms", "p95_ms", "p99_ms"]
        if not frames:
            return pd.DataFrame(columns=columns)
        df = pd.concat(frames, ignore_index=True)
        df["rpm"] = per_minute(df["requests"], df["bin"], window)
        df["failure_rate"] = df["failures"] / df["requests"]
        return df.sort_values(["bin", "endpoint", "model"], ignore_index=True)[columns]

    def status_mix(self, window: TimeWindow, endpoint: str | None = None) -> pd.DataFrame:
        start, end = _epoch(window.start), _epoch(window.end)
        first_minute, last_minute = math.ceil(start / 60) * 60, math.floor(end / 60) * 60
        where_ep, params_ep = self._where_endpoint(endpoint)
        totals: dict[tuple, int] = defaultdict(int)
        raw_ranges = [(start, end)]
        if first_minute < last_minute:
            raw_ranges = [(start, first_minute), (last_minute, end)]
            for status, model, n in self.db.query(
                    f"SELECT status, model, SUM(requests) FROM rollup_status WHERE {where_ep}minute >= ?"
                    f" AND minute < ? GROUP BY status, model", (*params_ep, first_minute, last_minute)):
                totals[(status, model or "(none)")] += n
        for lo, hi in raw_ranges:
            if hi > lo:
                for status, model, n in self.db.query(
                        f"SELECT status, model, COUNT(*) FROM requests WHERE {where_ep}ts >= ? AND ts < ?"
                        f" GROUP BY status, model", (*params_ep, lo, hi)):
                    totals[(status, model or "(none)")] += n
        df = pd.DataFrame([(s, m, n) for (s, m), n in totals.items()], columns=["status", "model", "requests"])
        return df.sort_values(["status", "model"], ignore_index=True)

    # --- individual requests ----------------------------------------------------

    def top_errors(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[ErrorGroup]:
        where_ep, params_ep = self._where_rows(endpoint, _epoch(window.start), _epoch(window.end))
        rows = self.db.query(
            f"SELECT COALESCE(error, ''), status, COUNT(*), MIN(ts), MAX(ts), GROUP_CONCAT(DISTINCT model),"
            f" MAX(request_id) FROM requests WHERE {where_ep}(status >= 400 OR status = 0) AND ts >= ? AND ts < ?"
            f" GROUP BY COALESCE(error, ''), status ORDER BY COUNT(*) DESC, MAX(ts) DESC LIMIT ?",
            (*params_ep, _epoch(window.start), _epoch(window.end), _limit(limit)))
        return [ErrorGroup(message=r[0] or "(no message)", status=r[1], count=r[2], first_seen=_utc(r[3]),
                           last_seen=_utc(r[4]), models=tuple(sorted((r[5] or "").split(",")) if r[5] else ()),
                           sample_request_id=r[6]) for r in rows]

    def slowest(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[RequestRecord]:
        where_ep, params_ep = self._where_rows(endpoint, _epoch(window.start), _epoch(window.end))
        rows = self.db.query(
            f"SELECT * FROM requests WHERE {where_ep}ts >= ? AND ts < ? ORDER BY latency_ms DESC LIMIT ?",
            (*params_ep, _epoch(window.start), _epoch(window.end), _limit(limit)))
        return [_record(r, bodies=False) for r in rows]

    def lookup(self, request_id: str) -> RequestDetail:
        request_id = (request_id or "").strip()
        if not request_id or len(request_id) > 200:
            raise InvalidInput("a request id is 1 to 200 characters",
                               hint="Copy it from the x-request-id header of the response.")
        row = self.db.one("SELECT * FROM requests WHERE request_id = ? ORDER BY ts DESC LIMIT 1", (request_id,))
        if row is None:  # a client's own id: one request, or several that reused it (never merged)
            rows = self.db.query("SELECT * FROM requests WHERE client_request_id = ? ORDER BY ts DESC LIMIT 11",
                                 (request_id,))
            if len(rows) > 1:
                shown = ", ".join(f"{r['request_id']} ({_utc(r['ts']):%Y-%m-%d %H:%M:%S} UTC)" for r in rows[:10])
                raise Conflict(f"{'more than 10' if len(rows) > 10 else len(rows)} requests carry the client "
                               f"request id {request_id!r}", hint=f"Look one up by its own request id: {shown}.")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"no request with id {request_id!r} in this workspace's telemetry",
                           hint="The id is in the response header x-request-id (also x-ms-request-id); the "
                                "client's own id (x-ms-client-request-id) works too. "
                                "Requests are recorded by the endpoint that answered them.")
        record = _record(row, bodies=True)
        return RequestDetail(record=record, log_lines=tuple(self.logs.request_lines(record)))

    def collected_inputs(self, window: TimeWindow, endpoint: str, model: str | None = None,
                         limit: int = 50_000) -> pd.DataFrame:
        params: list = [endpoint, _epoch(window.start), _epoch(window.end)]
        where_model = ""
        if model:
            where_model, params = " AND model = ?", params + [model]
        limit = max(1, int(limit))
        # ``limit`` counts feature rows: read requests newest first until there are enough (a cursor, not
        # a LIMIT on requests, so that bodies that are skipped or hold several rows do not cut it short)
        rows = self.db.conn.execute(
            "SELECT request_body, model, request_id FROM requests WHERE endpoint = ? AND ts >= ? AND ts < ?"
            f" AND status >= 200 AND status < 300{where_model} ORDER BY ts DESC", params)
        records = []
        for body, served_by, rid in rows:
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                continue
            data = payload.get("data") if isinstance(payload, dict) else None
            columns = payload.get("columns") if isinstance(payload, dict) else None
            for row in data if isinstance(data, list) else []:
                if isinstance(row, dict):
                    records.append({**row, "model": served_by, "request_id": rid})
                elif isinstance(row, list):
                    names = columns if isinstance(columns, list) and len(columns) == len(row) else \
                        [f"f{i}" for i in range(len(row))]
                    records.append({**dict(zip(names, row)), "model": served_by, "request_id": rid})
                if len(records) >= limit:
                    break
            if len(records) >= limit:
                break
        rows.close()  # ends the read (the statement may be unfinished)
        return pd.DataFrame.from_records(records)


def _limit(limit: int) -> int:
    if not 1 <= int(limit) <= 10_000:
        raise InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    return int(limit)


def _record(row, bodies: bool) -> RequestRecord:
    return RequestRecord(ts=_utc(row["ts"]), endpoint=row["endpoint"], deployment=row["deployment"],
                         model=row["model"], status=row["status"], latency_ms=row["latency_ms"],
                         request_id=row["request_id"],
                         request_body=row["request_body"] if bodies else None,
                         response_body=row["response_body"] if bodies else None, error=row["error"],
                         client_request_id=row["client_request_id"], upload_ms=row["upload_ms"])


# --- logs ----------------------------------------------------------------------

def read_lines_backwards(path: Path, block: int = 64 * 1024) -> Iterator[str]:
    """Lines of a file from the last to the first, reading blocks from the end (logs grow large)."""
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        position, rest = f.tell(), b""
        while position > 0:
            size = min(block, position)
            position -= size
            f.seek(position)
            chunk = f.read(size) + rest
            lines = chunk.split(b"\n")
            rest = lines[0]
            for line in reversed(lines[1:]):
                if line:
                    yield line.decode("utf-8", "replace").rstrip("\r")
        if rest:
            yield rest.decode("utf-8", "replace").rstrip("\r")


class LocalLogs:
    """``LogService`` over ``<workspace>/endpoints/<endpoint>/{<deployment>,gateway}.log``."""

    GATEWAY = "gateway"

    def __init__(self, root: Path):
        self.root = Path(root)

    def _dir(self, endpoint: str) -> Path:
        if not endpoint or "/" in endpoint or "\\" in endpoint or endpoint.startswith("."):
            raise InvalidInput(f"not an endpoint name: {endpoint!r}")
        return self.root / "endpoints" / endpoint

    def sources(self, endpoint: str) -> list[str]:
        folder = self._dir(endpoint)
        names = sorted(p.stem for p in folder.glob("*.log") if p.stem != self.GATEWAY) if folder.is_dir() else []
        return names + [self.GATEWAY]

    def _path(self, endpoint: str, source: str) -> Path:
        if source not in self.sources(endpoint):
            raise NotFound(f"endpoint {endpoint!r} has no log {source!r}",
                           hint=f"Known: {', '.join(self.sources(endpoint))}.")
        return self._dir(endpoint) / f"{source}.log"

    def search(self, endpoint: str, *, source: str | None = None, text: str | None = None,
               start: datetime | None = None, end: datetime | None = None, tail: int = 200) -> list[LogLine]:
        if text is not None and len(text) > MAX_SEARCH_TEXT:
            raise InvalidInput(f"search text is limited to {MAX_SEARCH_TEXT} characters")
        if not 1 <= int(tail) <= MAX_TAIL:
            raise InvalidInput(f"tail must be between 1 and {MAX_TAIL}, got {tail}")
        needle = text.lower() if text else None  # a plain substring: never a pattern
        sources = [source] if source else self.sources(endpoint)
        found: list[tuple[datetime, int, LogLine]] = []
        for order, name in enumerate(sources):
            path = self._path(endpoint, name)
            if path.exists():
                found += [(line.at or _MIN, order, line)
                          for line in self._matching(path, name, needle, start, end, int(tail))]
        found.sort(key=lambda item: (item[0], item[1]))  # stable: a file's own order is kept
        return [line for _, _, line in found[-int(tail):]]

    @staticmethod
    def _matching(path: Path, source: str, needle: str | None, start: datetime | None,
                  end: datetime | None, tail: int) -> list[LogLine]:
        """The last ``tail`` matching lines of one file, oldest first. Lines without a time stamp
        (tracebacks) take the time of the stamped line above them."""
        out: list[LogLine] = []
        pending: list[str] = []   # unstamped lines read (backwards) before their stamped head
        for raw in read_lines_backwards(path):
            at = line_time(raw)
            if at is None:
                pending.append(raw)
                continue
            if start is not None and at < start:
                break  # older than the window: the file is chronological
            group = [raw] + pending[::-1]
            pending = []
            if end is not None and at >= end:
                continue
            for text in reversed(group):
                if needle is None or needle in text.lower():
                    out.append(LogLine(at=at, source=source, text=text))
            if len(out) >= tail:
                break
        return out[:tail][::-1]

    def request_lines(self, record: RequestRecord) -> list[LogLine]:
        """The lines tagged with the request's id (gateway and deployment), then the untagged
        lines the serving deployment wrote while the request was in flight."""
        tag = f"{REQUEST_ID_SUFFIX}{record.request_id}"
        started = record.ts.timestamp() - record.latency_ms / 1000 - 0.01
        window = (_utc(started - 1), _utc(record.ts.timestamp() + 1))  # around the request, for speed
        tagged, during = [], []
        for source in [s for s in (record.deployment, self.GATEWAY) if s]:
            try:
                lines = self.search(record.endpoint, source=source, start=window[0], end=window[1], tail=MAX_TAIL)
            except NotFound:
                continue
            for line in lines:
                if line.text.endswith(tag) or f"{tag} " in line.text:
                    tagged.append(line)
                elif source == record.deployment and line.at and REQUEST_ID_SUFFIX not in line.text \
                        and started <= line.at.timestamp() <= record.ts.timestamp() + 0.01:
                    during.append(line)
        return sorted(tagged, key=lambda line: line.at or _MIN) + during


_MIN = datetime.min.replace(tzinfo=timezone.utc)
