"""Request telemetry of the local endpoints: ``<workspace>/telemetry.db``.

A file of its own: high-volume, append-only request records stay apart from
the control-plane database, so writing them never contends with a promote.
Gateways write through ``TelemetryWriter`` (a background thread batching
inserts in short ``BEGIN IMMEDIATE`` transactions); readers use WAL snapshots.
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .db import Database

TELEMETRY_FILE = "telemetry.db"

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
]

MAX_STORED_BODY = 64 * 1024  # payloads kept for data collection, truncated beyond this


@dataclass(frozen=True)
class RequestRecord:
    ts: float
    endpoint: str
    deployment: str | None
    model: str | None           # "name:version" that answered
    status: int
    latency_ms: float
    request_id: str
    request_body: str | None
    response_body: str | None
    error: str | None


def open_telemetry(root: Path) -> Database:
    return Database(Path(root) / TELEMETRY_FILE, migrations=MIGRATIONS)


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
            self._write(db, [item for item in pending if item is not None])
        db.close()

    @staticmethod
    def _write(db: Database, records: list[RequestRecord]) -> None:
        if not records:
            return
        rows = [(r.ts, r.endpoint, r.deployment, r.model, r.status, r.latency_ms, r.request_id, r.request_body,
                 r.response_body, r.error) for r in records]  # not astuple(): it deep-copies every field
        for attempt in range(50):  # never drop a record: retry while the file is locked
            try:
                with db.write() as c:
                    c.executemany(
                        "INSERT INTO requests (ts, endpoint, deployment, model, status, latency_ms, request_id,"
                        " request_body, response_body, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
                return
            except Exception:  # sqlite3.OperationalError (locked) — back off and retry
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        raise RuntimeError(f"could not write {len(rows)} telemetry records")


def truncate(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_STORED_BODY:
        return text
    return text[:MAX_STORED_BODY] + f"…[truncated {len(text) - MAX_STORED_BODY} chars]"
