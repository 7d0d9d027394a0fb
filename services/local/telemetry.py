"""Request telemetry of the local endpoints (``TelemetryService``) over ``telemetry.db``.

Every view of a window (series, stats, status mix, top errors, slowest) is read from the
bounded aggregates of ``telemetry_store`` — whole hours from the hourly ones, whole minutes
at the window's edges from the per-minute ones — plus raw rows only for the sub-minute
ragged edges (``plan``), so counts are exact for any window and a 7-day view reads its
hours, not its requests. Latency percentiles come from the histograms (±2.5 %). Series
binned finer than a minute (windows under an hour) read raw rows.

What retention pruned is gone from its level: a window reaching past the raw rows' retention
starts its raw parts where they start, one reaching past the per-minute aggregates starts at
its first whole hour (``retained``).

The file is opened on first use, so a damaged ``telemetry.db`` fails only the telemetry
views (``BackendUnavailable`` naming the file and what to do), never the rest.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from ..entities import ErrorGroup, RequestDetail, RequestRecord, TimeWindow, VersionStats
from ..errors import Conflict, InvalidInput, NotFound
from ..telemetry import mark_frame, per_minute
from . import retention
from .logs import LocalLogs
from .telemetry_store import (BUCKETS, HIST_DTYPE, HOUR, MAX_ERROR_TEXT, MINUTE, SLOWEST_K, bucket_of, bucket_value,
                              open_telemetry, rid_of, unpack_id, unpack_payloads)

QUANTILES = (0.50, 0.95, 0.99)
LEVEL_SPAN = {"hour": HOUR, "minute": MINUTE}


def _epoch(dt: datetime) -> float:
    return dt.timestamp()


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def plan(start: float, end: float, bin_seconds: float | None, since: dict[str, float]) -> list[tuple[str, float, float]]:
    """[start, end) as (level, lo, hi) parts: whole hours, then whole minutes, then raw rows for
    what is left, each level only where it is retained (``since``) and where its unit fits the
    bins (``bin_seconds`` None: one bin)."""
    parts, gaps = [], [(start, end)]
    for level, unit in (("hour", HOUR), ("minute", MINUTE)):
        if bin_seconds is not None and bin_seconds % unit:
            continue
        floor = math.ceil(since.get(level, 0.0) / unit) * unit
        left = []
        for a, b in gaps:
            lo, hi = max(math.ceil(a / unit) * unit, floor), math.floor(b / unit) * unit
            if lo < hi:
                parts.append((level, lo, hi))
                left += [(a, lo), (hi, b)]
            else:
                left.append((a, b))
        gaps = [(a, b) for a, b in left if b > a]
    for a, b in gaps:
        a = max(a, since.get("raw", 0.0))
        if a < b:
            parts.append(("raw", a, b))
    return parts


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
        """Aggregate rows of one group: ``counts`` (rows, 3), ``blobs`` their sparse histograms."""
        i = self._index(key)
        for j in range(3):
            self.counts[i][:, j] += np.bincount(bins, weights=counts[:, j], minlength=self.n_bins).astype(np.int64)
        pairs = np.frombuffer(b"".join(blobs), dtype=HIST_DTYPE)
        pair_bin = np.repeat(bins, np.fromiter(map(len, blobs), dtype=np.int64, count=len(blobs)) // HIST_DTYPE.itemsize)
        flat = np.bincount(pair_bin * BUCKETS + pairs["bucket"], weights=pairs["count"], minlength=self.n_bins * BUCKETS)
        self.hists[i] += flat.astype(np.int64).reshape(self.n_bins, BUCKETS)  # float64 sums of counts: exact

    def add_raw(self, keys: list[tuple], group: np.ndarray, bins: np.ndarray, status: np.ndarray,
                latency: np.ndarray) -> None:
        """Raw rows: ``group[i]`` indexes ``keys``, the row's group key."""
        failures = (status >= 500) | (status == 0)
        client = (status >= 400) & (status < 500)
        buckets = bucket_of(latency)
        for g, key in enumerate(keys):
            mine = group == g
            if not mine.any():
                continue
            i, b = self._index(key), bins[mine]
            for j, weights in enumerate((None, failures[mine], client[mine])):
                self.counts[i][:, j] += np.bincount(b, weights=weights, minlength=self.n_bins).astype(np.int64)
            self.hists[i] += np.bincount(b * BUCKETS + buckets[mine],
                                         minlength=self.n_bins * BUCKETS).reshape(self.n_bins, BUCKETS)

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

    def __init__(self, root: Path, logs: LocalLogs):
        self.root = Path(root)
        self.logs = logs
        self._db = None
        self._series: dict[int, tuple[str, str | None, str | None]] = {}

    @property
    def db(self):
        """The telemetry file, opened (and migrated) on first use."""
        if self._db is None:
            self._db = open_telemetry(self.root)
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()

    # --- series and parts -------------------------------------------------------

    def _series_of(self, endpoint: str | None, model: str | None = None) -> dict[int, tuple]:
        """Series id -> (endpoint, deployment, model) of ``endpoint`` (all when None)."""
        count = self.db.one("SELECT COUNT(*) FROM series")[0]
        if count != len(self._series):  # series are only ever added
            self._series = {i: (ep, dep or None, mod or None) for i, ep, dep, mod in self._rows(
                "SELECT id, endpoint, deployment, model FROM series")}
        return {i: key for i, key in self._series.items()
                if (endpoint is None or key[0] == endpoint) and (model is None or key[2] == model)}

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        cursor = self.db.conn.cursor()
        cursor.row_factory = None  # plain tuples: cheaper than sqlite3.Row by the thousand
        return cursor.execute(sql, params).fetchall()

    def _plan(self, window: TimeWindow, bin_seconds: float | None) -> list[tuple[str, float, float]]:
        return plan(_epoch(window.start), _epoch(window.end), bin_seconds, retention.retained(self.db))

    @staticmethod
    def _in(ids) -> str:
        return f"({', '.join(str(int(i)) for i in ids)})"  # ids are integers of our own table

    # --- aggregates -------------------------------------------------------------

    def _cells(self, window: TimeWindow, endpoint: str | None, by_deployment: bool, binned: bool) -> tuple[_Cells, float]:
        start, end = _epoch(window.start), _epoch(window.end)
        size = window.bin_seconds if binned else max(end - start, 1.0)
        origin = math.floor(start / size) * size if binned else start  # bins aligned like KQL's bin()
        n_bins = max(1, math.ceil((end - origin) / size)) if binned else 1
        cells = _Cells(n_bins)
        series = self._series_of(endpoint)
        if not series:
            return cells, origin

        def key(s):
            ep, dep, model = series[s]
            return (ep, dep, model) if by_deployment else (ep, model)

        for level, lo, hi in self._plan(window, window.bin_seconds if binned else None):
            if level == "raw":
                rows = self._rows(f"SELECT ts, series, status, latency_ms FROM requests WHERE ts >= ? AND ts < ?"
                                  f" AND series IN {self._in(series)}", (lo, hi))
                if rows:
                    ts, ser, status, latency = (np.array(c) for c in zip(*rows))
                    bins = np.minimum(((ts - origin) // size).astype(np.int64), n_bins - 1)
                    ids, group = np.unique(ser, return_inverse=True)
                    cells.add_raw([key(s) for s in ids.tolist()], group.reshape(-1), bins, status.astype(np.int64),
                                  latency.astype(float))
                continue
            for s in series:  # per series: rows come back as numbers and blobs only
                rows = self._rows("SELECT start, requests, failures, client_errors, hist FROM rollup"
                                  " WHERE span = ? AND series = ? AND start >= ? AND start < ?",
                                  (LEVEL_SPAN[level], s, lo, hi))
                if rows:
                    starts, requests, failures, client, blobs = zip(*rows)
                    bins = ((np.array(starts, dtype=float) - origin) // size).astype(np.int64) if binned \
                        else np.zeros(len(rows), dtype=np.int64)
                    cells.add_rollups(key(s), bins, np.array([requests, failures, client], dtype=np.int64).T,
                                      list(blobs))
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
        series = self._series_of(endpoint)
        totals: dict[tuple, int] = defaultdict(int)
        for level, lo, hi in self._plan(window, None) if series else ():
            rows = self._rows(
                f"SELECT series, status, SUM(requests) FROM rollup_status WHERE span = ? AND series IN {self._in(series)}"
                f" AND start >= ? AND start < ? GROUP BY series, status", (LEVEL_SPAN[level], lo, hi)) \
                if level != "raw" else self._rows(
                f"SELECT series, status, COUNT(*) FROM requests WHERE ts >= ? AND ts < ? AND series IN {self._in(series)}"
                f" GROUP BY series, status", (lo, hi))
            for s, status, n in rows:
                totals[(status, series[s][2] or "(none)")] += n
        df = pd.DataFrame([(s, m, n) for (s, m), n in totals.items()], columns=["status", "model", "requests"])
        return df.sort_values(["status", "model"], ignore_index=True)

    # --- individual requests ----------------------------------------------------

    def top_errors(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[ErrorGroup]:
        limit = _limit(limit)
        series = self._series_of(endpoint)
        groups: dict[tuple[str, int], list] = {}

        def add(message, status, count, first, last, model, sample):
            g = groups.setdefault((message, status), [0, math.inf, -math.inf, set(), ""])
            g[0] += count
            g[1] = min(g[1], first)
            if last >= g[2]:
                g[2], g[4] = last, sample
            if model:
                g[3].add(model)

        for level, lo, hi in self._plan(window, None) if series else ():
            if level == "raw":  # a sub-minute edge: its few failed rows one by one
                for error, status, s, ts, rid in self._rows(
                        f"SELECT error, status, series, ts, request_id FROM requests WHERE ts >= ? AND ts < ?"
                        f" AND (status >= 400 OR status = 0) AND series IN {self._in(series)}", (lo, hi)):
                    add((error or "")[:MAX_ERROR_TEXT], status, 1, ts, ts, series[s][2], unpack_id(rid))
            else:
                for s in series:
                    for message, status, count, first, last, sample in self._rows(
                            "SELECT error, status, requests, first_ts, last_ts, sample_request_id FROM rollup_errors"
                            " WHERE span = ? AND series = ? AND start >= ? AND start < ?",
                            (LEVEL_SPAN[level], s, lo, hi)):
                        add(message, status, count, first, last, series[s][2], sample)
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0], -kv[1][2]))[:limit]
        return [ErrorGroup(message=message or "(no message)", status=status, count=g[0], first_seen=_utc(g[1]),
                           last_seen=_utc(g[2]), models=tuple(sorted(g[3])), sample_request_id=g[4])
                for (message, status), g in ranked]

    def slowest(self, window: TimeWindow, endpoint: str | None = None, limit: int = 10) -> list[RequestRecord]:
        """Exact for ``limit <= SLOWEST_K`` over any retained window (the aggregates keep the slowest
        K of every minute and hour); a larger ``limit`` reads the window's retained raw rows."""
        limit = _limit(limit)
        series = self._series_of(endpoint)
        if not series:
            return []
        parts = self._plan(window, None) if limit <= SLOWEST_K else \
            [("raw", max(_epoch(window.start), retention.retained(self.db).get("raw", 0.0)), _epoch(window.end))]
        found = []
        for level, lo, hi in parts:
            if level == "raw":
                found += self._rows(
                    f"SELECT latency_ms, ts, series, status, request_id, error FROM requests WHERE ts >= ? AND ts < ?"
                    f" AND series IN {self._in(series)} ORDER BY latency_ms DESC LIMIT ?", (lo, hi, limit))
            else:
                found += self._rows(
                    f"SELECT latency_ms, ts, series, status, request_id, error FROM rollup_slowest WHERE span = ?"
                    f" AND series IN {self._in(series)} AND start >= ? AND start < ? ORDER BY latency_ms DESC LIMIT ?",
                    (LEVEL_SPAN[level], lo, hi, limit))
        found.sort(key=lambda r: -r[0])
        return [RequestRecord(ts=_utc(ts), endpoint=series[s][0], deployment=series[s][1], model=series[s][2],
                              status=status, latency_ms=latency, request_id=unpack_id(rid), error=error)
                for latency, ts, s, status, rid, error in found[:limit]]

    def lookup(self, request_id: str) -> RequestDetail:
        request_id = (request_id or "").strip()
        if not request_id or len(request_id) > 200:
            raise InvalidInput("a request id is 1 to 200 characters",
                               hint="Copy it from the x-request-id header of the response.")
        columns = "SELECT ts, series, status, latency_ms, request_id, error, block, slot, client_request_id, upload_ms"
        rows = self._rows(f"{columns} FROM requests WHERE rid = ? ORDER BY ts DESC", (rid_of(request_id),))
        row = next((r for r in rows if unpack_id(r[4]) == request_id), None)
        if row is None:  # a client's own id: one request, or several that reused it (never merged)
            rows = self._rows(f"{columns} FROM requests WHERE client_request_id = ? ORDER BY ts DESC LIMIT 11",
                              (request_id,))
            if len(rows) > 1:
                shown = ", ".join(f"{unpack_id(r[4])} ({_utc(r[0]):%Y-%m-%d %H:%M:%S} UTC)" for r in rows[:10])
                raise Conflict(f"{'more than 10' if len(rows) > 10 else len(rows)} requests carry the client "
                               f"request id {request_id!r}", hint=f"Look one up by its own request id: {shown}.")
            row = rows[0] if rows else None
        if row is None:
            pruned = retention.pruned_when(self.db, request_id)
            if pruned is not None:
                day, at = pruned
                raise NotFound(f"request {request_id!r} was recorded on {_utc(day):%Y-%m-%d} (UTC); its details were "
                               f"pruned on {_utc(at):%Y-%m-%d %H:%M} UTC by the telemetry retention",
                               hint="Raw request rows are kept [telemetry] raw_days days (tollgate.toml); the "
                                    "Monitoring charts keep its minute and hour for longer.")
            raise NotFound(f"no request with id {request_id!r} in this workspace's telemetry",
                           hint="The id is in the response header x-request-id (also x-ms-request-id); the "
                                "client's own id (x-ms-client-request-id) works too. "
                                "Requests are recorded by the endpoint that answered them.")
        ts, s, status, latency, rid, error, block, slot, client_id, upload_ms = row
        ep, dep, model = self._series_of(None)[s]
        request_body = response_body = None
        if block is not None:
            request_body, response_body = unpack_payloads(self.db.one("SELECT data FROM payloads WHERE id = ?",
                                                                      (block,))[0])[slot]
        record = RequestRecord(ts=_utc(ts), endpoint=ep, deployment=dep, model=model, status=status, latency_ms=latency,
                               request_id=unpack_id(rid), request_body=request_body, response_body=response_body,
                               error=error, client_request_id=client_id, upload_ms=upload_ms,
                               payload_captured=block is not None)
        return RequestDetail(record=record, log_lines=tuple(self.logs.request_lines(record)))

    def collected_inputs(self, window: TimeWindow, endpoint: str, model: str | None = None,
                         limit: int = 50_000) -> pd.DataFrame:
        series = self._series_of(endpoint, model)
        limit = max(1, int(limit))
        if not series:
            return pd.DataFrame()
        lo = max(_epoch(window.start), retention.retained(self.db).get("raw", 0.0))
        # ``limit`` counts feature rows: read requests newest first until there are enough (a cursor, not
        # a LIMIT on requests, so that bodies that are skipped or hold several rows do not cut it short)
        cursor = self.db.conn.cursor()
        cursor.row_factory = None
        rows = cursor.execute(
            f"SELECT block, slot, series, request_id FROM requests WHERE ts >= ? AND ts < ? AND status >= 200"
            f" AND status < 300 AND block IS NOT NULL AND series IN {self._in(series)} ORDER BY ts DESC",
            (lo, _epoch(window.end)))
        records, blocks = [], {}
        for block, slot, s, rid in rows:
            if block not in blocks:
                blocks = {block: unpack_payloads(self.db.one("SELECT data FROM payloads WHERE id = ?", (block,))[0])}
            body = blocks[block][slot][0]
            try:
                payload = json.loads(body) if body else None
            except ValueError:
                continue
            served_by, request_id = series[s][2], unpack_id(rid)
            data = payload.get("data") if isinstance(payload, dict) else None
            columns = payload.get("columns") if isinstance(payload, dict) else None
            for row in data if isinstance(data, list) else []:
                if isinstance(row, dict):
                    records.append({**row, "model": served_by, "request_id": request_id})
                elif isinstance(row, list):
                    names = columns if isinstance(columns, list) and len(columns) == len(row) else \
                        [f"f{i}" for i in range(len(row))]
                    records.append({**dict(zip(names, row)), "model": served_by, "request_id": request_id})
                if len(records) >= limit:
                    break
            if len(records) >= limit:
                break
        rows.close()  # ends the read (the statement may be unfinished)
        cut = lo > _epoch(window.start)
        return mark_frame(pd.DataFrame.from_records(records), (
            f"inputs before {_utc(lo):%Y-%m-%d %H:%M} UTC are no longer kept (raw request rows are kept "
            f"[telemetry] raw_days): these are the inputs of the window's retained part") if cut else None)


def _limit(limit: int) -> int:
    if not 1 <= int(limit) <= 10_000:
        raise InvalidInput(f"limit must be between 1 and 10000, got {limit}")
    return int(limit)
