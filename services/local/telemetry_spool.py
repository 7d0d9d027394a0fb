"""A gateway's telemetry, written ahead: an answered request is on disk before its answer leaves.

``TelemetryWriter.record(rec)`` appends the record as one line to the gateway's spool file
(``<workspace>/telemetry-spool/<endpoint>.<pid>.<ns>.jsonl``) with a single ``os.write``
— no fsync: the operating system keeps it through a ``kill -9`` of the gateway (a power
cut can lose the last seconds) — then queues it. A thread stores the queue in batches
(``telemetry_store.append``) and writes how far into the spool it got *in the same
transaction*, so each line is stored exactly once.

A gateway that dies leaves its spool behind. ``fold_spools`` — run by every gateway as it
starts and by the supervisor's telemetry tick — stores what an orphaned spool holds past its
recorded offset, in transactions that re-read that offset (two folders never store a line
twice), then deletes the file. A spool is orphaned when nobody holds its lock: the writer
keeps an exclusive ``flock`` on it, which the kernel drops when the process dies.
"""
from __future__ import annotations

import fcntl
import json
import os
import queue
import sqlite3
import threading
import time
from pathlib import Path

from ..errors import BackendUnavailable
from .db import Database
from .telemetry_store import RequestRecord, SeriesIds, append, open_telemetry, store

SPOOL_DIR = "telemetry-spool"
ROTATE_BYTES = 8 * 1024 * 1024    # a fully stored spool this large is replaced by a new one
FOLD_BATCH = 5000


def spool_dir(root: Path) -> Path:
    return Path(root) / SPOOL_DIR


def _line(rec: RequestRecord) -> bytes:
    return (json.dumps([rec.ts, rec.endpoint, rec.deployment, rec.model, rec.status, rec.latency_ms, rec.request_id,
                        rec.request_body, rec.response_body, rec.error, rec.client_request_id, rec.upload_ms],
                       ensure_ascii=False) + "\n").encode()


class Spool:
    """The append-only file of one writer, locked while it lives."""

    def __init__(self, folder: Path, endpoint: str):
        self.folder, self.endpoint = Path(folder), endpoint
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.retired: dict[str, int] = {}  # rotated files -> their still-locked descriptors
        self._open()

    def _open(self) -> None:
        self.name = f"{self.endpoint}.{os.getpid()}.{time.time_ns()}.jsonl"
        self.fd = os.open(self.folder / self.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        self.size = 0

    def append(self, rec: RequestRecord) -> tuple[str, int]:
        """Write one record; returns (file, offset after it)."""
        data = _line(rec)
        with self._lock:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
            self.size += len(data)
            return self.name, self.size

    def rotate(self) -> str:
        """Start a new file; returns the name of the old one, still locked (``release``) until the
        records queued from it are stored: nobody else may fold it meanwhile."""
        with self._lock:
            old, fd = self.name, self.fd
            self._open()
        self.retired[old] = fd
        return old

    def release(self, name: str) -> None:
        os.close(self.retired.pop(name))

    def close(self) -> None:
        for name in list(self.retired):
            self.release(name)
        os.close(self.fd)


class TelemetryWriter:
    """Spool records from request handlers; a thread stores them in batches."""

    def __init__(self, root: Path, endpoint: str, capture_fraction: float = 1.0,
                 flush_interval_s: float = 0.05, batch: int = 500):
        self.root = Path(root)
        self.capture_fraction = capture_fraction
        self.flush_interval_s, self.batch = flush_interval_s, batch
        self.spool = Spool(spool_dir(self.root), endpoint)
        self._queue: queue.SimpleQueue[tuple[RequestRecord, str, int] | None] = queue.SimpleQueue()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="telemetry-writer", daemon=True)
        self._thread.start()

    def record(self, rec: RequestRecord) -> None:
        """On disk when this returns: call it before the answer is sent."""
        self._queue.put((rec, *self.spool.append(rec)))

    def close(self, timeout_s: float = 10.0) -> None:
        """Store everything queued, then stop (and remove the spool, all of it stored)."""
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout_s)

    def _open(self) -> Database | None:
        """The telemetry file (the connection belongs to this thread); while it cannot be opened
        (a damaged file moved aside by hand, say) records stay in the spool and serving goes on."""
        while True:
            try:
                return open_telemetry(self.root)
            except BackendUnavailable as e:
                print(f"telemetry: {e} ({e.hint}); records are kept in {self.spool.name} meanwhile", flush=True)
                if self._closing.wait(5.0):
                    return None

    def _loop(self) -> None:
        db = self._open()
        if db is None:
            self.spool.close()  # the spool stays: folded once the file can be written again
            return
        series = SeriesIds()
        fold_spools(self.root, db, series)  # what earlier gateways of this workspace left
        done: list[str] = []  # rotated files whose lines are all stored
        stopping, stored_all = False, True
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
            items = [item for item in pending if item is not None]
            if not stored_all:
                continue  # spooled only, from the first failure on: the offsets must not pass a lost batch
            try:
                self._write(db, series, items)
            except Exception as e:  # the lines stay in the spool: folded by the next gateway or the supervisor
                print(f"telemetry: records not stored from here on (kept in the spool {self.spool.name}): "
                      f"{type(e).__name__}: {e}", flush=True)
                stored_all = False
                continue
            if self.spool.size >= ROTATE_BYTES and not stopping:
                done.append(self.spool.rotate())
            for name in list(done):
                if not any(file == name for _, file, _ in items):
                    _forget(db, self.root, name)  # deleted while still locked, then unlocked
                    self.spool.release(name)
                    done.remove(name)
        if stored_all:  # every line of every file of this writer is stored
            for name in [*done, self.spool.name]:
                _forget(db, self.root, name)
        self.spool.close()
        db.close()

    def _write(self, db: Database, series: SeriesIds, items: list[tuple[RequestRecord, str, int]]) -> None:
        if not items:
            return
        progress: dict[str, int] = {}
        for _, file, offset in items:
            progress[file] = max(offset, progress.get(file, 0))
        for attempt in range(50):  # retry while the file is locked
            try:
                append(db, [rec for rec, _, _ in items], series, self.capture_fraction, list(progress.items()))
                return
            except sqlite3.OperationalError:  # locked beyond busy_timeout — back off and retry
                time.sleep(min(0.05 * (attempt + 1), 1.0))
        raise RuntimeError(f"could not store {len(items)} telemetry records")


def _forget(db: Database, root: Path, name: str) -> None:
    """A spool whose every line is stored: the file goes first, then its offset (never the other way:
    an offset gone with the file still there would store the file again)."""
    (spool_dir(root) / name).unlink(missing_ok=True)
    with db.write() as c:
        c.execute("DELETE FROM spool_progress WHERE file = ?", (name,))


def fold_spools(root: Path, db: Database, series: SeriesIds | None = None) -> int:
    """Store the lines of every orphaned spool past its recorded offset; returns how many."""
    folder = spool_dir(root)
    if not folder.is_dir():
        return 0
    series = series or SeriesIds()
    stored = 0
    for path in sorted(folder.glob("*.jsonl")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # folded by someone else meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live writer's
            stored += _fold(db, series, path.name, os.read(fd, os.fstat(fd).st_size) if os.fstat(fd).st_size else b"")
            path.unlink(missing_ok=True)
            with db.write() as c:
                c.execute("DELETE FROM spool_progress WHERE file = ?", (path.name,))
        finally:
            os.close(fd)
    return stored


def _fold(db: Database, series: SeriesIds, name: str, data: bytes) -> int:
    """Store the complete lines of ``data`` past the file's offset, a batch per transaction."""
    stored, at = 0, 0
    while True:
        records, end = [], at
        while len(records) < FOLD_BATCH:
            newline = data.find(b"\n", end)
            if newline < 0:
                break  # a line cut by the kill: its answer was never sent
            records.append((end, newline + 1))
            end = newline + 1
        if not records:
            return stored
        ids = {}
        with db.write() as c:
            row = c.execute("SELECT offset FROM spool_progress WHERE file = ?", (name,)).fetchone()
            done = row[0] if row else 0
            fresh = [RequestRecord(*json.loads(data[a:b])) for a, b in records if a >= done]
            if fresh:
                ids = store(c, fresh, series)
                stored += len(fresh)
            c.execute("INSERT INTO spool_progress (file, offset) VALUES (?, ?) ON CONFLICT (file)"
                      " DO UPDATE SET offset = MAX(offset, excluded.offset)", (name, end))
        series.commit(ids)
        at = end
