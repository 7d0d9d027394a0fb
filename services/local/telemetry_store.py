"""Request telemetry of the local endpoints: ``<workspace>/telemetry.db``.

A file of its own: high-volume, append-only request records stay apart from
the control-plane database, so writing them never contends with a promote.
Gateways write through ``TelemetryWriter`` (a background thread batching
inserts in short ``BEGIN IMMEDIATE`` transactions); readers use WAL snapshots.

Two levels, written in the same transaction so they always agree:

* ``requests``: one row per request (payloads kept for lookup and drift);
* ``rollup_minute`` / ``rollup_status``: per minute, endpoint, deployment and
  model version — counts and a latency histogram (log-spaced buckets, ±2.5 %)
  — so that a 7-day chart over a million requests reads ~10,000 small rows
  instead of a million (what App Insights' pre-aggregated metrics do).
"""
from __future__ import annotations

import math
import queue
import sqlite3
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .db import Database

TELEMETRY_FILE = "telemetry.db"

# Latency histogram: bucket b holds [LOW_MS * GROWTH**b, LOW_MS * GROWTH**(b+1)).
LOW_MS = 0.05
GROWTH = 1.05                     # a bucket's midpoint is within 2.5 % of any value in it
BUCKETS = 340                     # up to ~10 minutes; slower requests land in the last bucket
HIST_DTYPE = np.dtype([("bucket", "<u2"), ("count", "<u4")])  # sparse: only non-empty buckets


def bucket_of(latency_ms: np.ndarray | float) -> np.ndarray:
    value = np.maximum(np.asarray(latency_ms, dtype=float), LOW_MS)
    return np.minimum((np.log(value / LOW_MS) / math.log(GROWTH)).astype(np.int64), BUCKETS - 1)


def bucket_value(bucket: np.ndarray) -> np.ndarray:
    """The geometric midpoint of a bucket: what a percentile falling in it reports."""
    return LOW_MS * GROWTH ** (np.asarray(bucket) + 0.5)


def encode_hist(dense: np.ndarray) -> bytes:
    nonzero = np.flatnonzero(dense)
    out = np.empty(len(nonzero), dtype=HIST_DTYPE)
    out["bucket"], out["count"] = nonzero, dense[nonzero]
    return out.tobytes()


def decode_hist(blob: bytes) -> np.ndarray:
    dense = np.zeros(BUCKETS, dtype=np.int64)
    pairs = np.frombuffer(blob, dtype=HIST_DTYPE)
    dense[pairs["bucket"]] = pairs["count"]
    return dense


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute("""
        CREATE TABLE rollup_minute (
            minute INTEGER NOT NULL,            -- epoch seconds of the minute's start (UTC)
            endpoint TEXT NOT NULL,
            deployment TEXT NOT NULL,           -- '' when no deployment answered
            model TEXT NOT NULL,                -- "name:version", '' when none
            requests INTEGER NOT NULL,
            failures INTEGER NOT NULL,          -- 5xx and status 0 (no answer)
            client_errors INTEGER NOT NULL,     -- 4xx
            latency_sum REAL NOT NULL,
            hist BLOB NOT NULL,                 -- sparse (bucket u16, count u32) pairs
            PRIMARY KEY (endpoint, minute, deployment, model)
        ) WITHOUT ROWID""")
    conn.execute("""
        CREATE TABLE rollup_status (
            minute INTEGER NOT NULL,
            endpoint TEXT NOT NULL,
            model TEXT NOT NULL,
            status INTEGER NOT NULL,
            requests INTEGER NOT NULL,
            PRIMARY KEY (endpoint, minute, model, status)
        ) WITHOUT ROWID""")


def _build_rollups(conn: sqlite3.Connection) -> None:
    """Migration 2: the rollup tables, filled from the requests already stored."""
    _create_tables(conn)
    cursor = conn.execute("SELECT ts, endpoint, deployment, model, status, latency_ms FROM requests ORDER BY id")
    while rows := cursor.fetchmany(50_000):
        _add_to_rollups(conn, rows)


MIGRATIONS = [
    """
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        endpoint TEXT NOT NULL,
        deployment TEXT,
        model TEXT,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        request_id TEXT NOT NULL,
        request_body TEXT,
        response_body TEXT,
        error TEXT
    );
    CREATE INDEX requests_endpoint_ts ON requests(endpoint, ts);
    CREATE INDEX requests_request_id ON requests(request_id);
    """,
    _build_rollups,
    # 3: the client's own request id (x-ms-client-request-id / x-request-id: a correlation id, not
    # unique; request_id is the gateway's) and the time the request body took to arrive (Azure's
    # RequestDurationMs), which latency_ms leaves out
    """
    ALTER TABLE requests ADD COLUMN client_request_id TEXT;
    ALTER TABLE requests ADD COLUMN upload_ms REAL;
    CREATE INDEX requests_client_request_id ON requests(client_request_id);
    """,
]

MAX_STORED_BODY = 64 * 1024  # payloads kept for data collection, truncated beyond this


@dataclass(frozen=True)
class RequestRecord:
    ts: float                   # epoch seconds
    endpoint: str
    deployment: str | None
    model: str | None           # "name:version" that answered
    status: int
    latency_ms: float           # from the whole request received to the answer
    request_id: str             # the gateway's, unique
    request_body: str | None
    response_body: str | None
    error: str | None
    client_request_id: str | None = None
    upload_ms: float | None = None   # receiving the body (None: refused before reading it)


def open_telemetry(root: Path) -> Database:
    return Database(Path(root) / TELEMETRY_FILE, migrations=MIGRATIONS)


def append(db: Database, records: list[RequestRecord]) -> None:
    """Store records and fold them into the rollups, in one transaction."""
    rows = [(r.ts, r.endpoint, r.deployment, r.model, r.status, r.latency_ms, r.request_id, r.request_body,
             r.response_body, r.error, r.client_request_id, r.upload_ms)
            for r in records]  # not astuple(): it deep-copies every field
    with db.write() as c:
        c.executemany(
            "INSERT INTO requests (ts, endpoint, deployment, model, status, latency_ms, request_id,"
            " request_body, response_body, error, client_request_id, upload_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        _add_to_rollups(c, [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in rows])


def _add_to_rollups(conn: sqlite3.Connection, rows: Iterable[tuple]) -> None:
    """``rows``: (ts, endpoint, deployment, model, status, latency_ms). Read-modify-write of the
    touched minutes; callers hold the write transaction, so concurrent gateways serialise here."""
    groups: dict[tuple, list] = defaultdict(list)
    for ts, endpoint, deployment, model, status, latency in rows:
        groups[(int(ts // 60 * 60), endpoint, deployment or "", model or "")].append((status, latency))
    minute_rows, status_counts = [], defaultdict(int)
    for (minute, endpoint, deployment, model), items in groups.items():
        statuses = np.fromiter((s for s, _ in items), dtype=np.int64, count=len(items))
        latencies = np.fromiter((v for _, v in items), dtype=float, count=len(items))
        hist = np.bincount(bucket_of(latencies), minlength=BUCKETS)
        old = conn.execute(
            "SELECT requests, failures, client_errors, latency_sum, hist FROM rollup_minute"
            " WHERE endpoint = ? AND minute = ? AND deployment = ? AND model = ?",
            (endpoint, minute, deployment, model)).fetchone()
        counts = [len(items), int(((statuses >= 500) | (statuses == 0)).sum()),
                  int(((statuses >= 400) & (statuses < 500)).sum()), float(latencies.sum())]
        if old is not None:
            counts = [a + b for a, b in zip(counts, old[:4])]
            hist = hist + decode_hist(old[4])
        minute_rows.append((minute, endpoint, deployment, model, *counts, encode_hist(hist)))
        for s in statuses.tolist():
            status_counts[(minute, endpoint, model, s)] += 1
    conn.executemany("INSERT OR REPLACE INTO rollup_minute VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", minute_rows)
    conn.executemany(
        "INSERT INTO rollup_status VALUES (?, ?, ?, ?, ?) ON CONFLICT (endpoint, minute, model, status)"
        " DO UPDATE SET requests = requests + excluded.requests",
        [(*key, n) for key, n in status_counts.items()])


class TelemetryWriter:
    """Queue records from request handlers; a thread writes them in batches."""

    def __init__(self, root: Path, flush_interval_s: float = 0.05, batch: int = 500):
        self.root = Path(root)
        self.flush_interval_s, self.batch = flush_interval_s, batch
        self._queue: queue.SimpleQueue[RequestRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="telemetry-writer", daemon=True)
        self._thread.start()

    def record(self, rec: RequestRecord) -> None:
        self._queue.put(rec)

    def close(self, timeout_s: float = 10.0) -> None:
        """Write everything queued, then stop."""
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _loop(self) -> None:
        db = open_telemetry(self.root)  # the connection belongs to this thread
        stopping = False
        while not stopping:
            pending = [self._queue.get()]  # wait for a first record
            if pending[0] is not None and self._queue.qsize() < self.batch:
                # let the batch fill: one transaction per interval rather than one per request
                time.sleep(self.flush_interval_s)
            while len(pending) < self.batch:
                try:
                    pending.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stopping = any(item is None for item in pending)
            try:
                self._write(db, [item for item in pending if item is not None])
            except Exception as e:  # keep the thread alive for the records that follow
                print(f"telemetry: {len(pending)} records not written: {type(e).__name__}: {e}", flush=True)
        db.close()

    @staticmethod
    def _write(db: Database, records: list[RequestRecord]) -> None:
        if not records:
            return
        for attempt in range(50):  # never drop a record: retry while the file is locked
            try:
                append(db, records)
                return
            except sqlite3.OperationalError:  # locked beyond busy_timeout — back off and retry
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        raise RuntimeError(f"could not write {len(records)} telemetry records")


def truncate(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_STORED_BODY:
        return text
    return text[:MAX_STORED_BODY] + f"…[truncated {len(text) - MAX_STORED_BODY} chars]"
