"""Request telemetry of the local endpoints: ``<workspace>/telemetry.db``.

A file of its own: high-volume request records stay apart from the control-plane
database, so writing them never contends with a promote. Gateways write through
``telemetry_spool.TelemetryWriter``; readers use WAL snapshots; the supervisor prunes
(``retention``).

Two kinds of data, written in the same transaction so they always agree:

* **raw rows** (``requests``), one per request, kept ``[telemetry] raw_days``: compact —
  the (endpoint, deployment, model) triple is a small ``series`` id, a UUID request id is
  16 bytes, looked up through a 64-bit hash (``rid``); the payloads of a batch are one
  compressed block (``payloads``) that each row points into (or none: ``capture_fraction``);
* **aggregates** per series and minute, and per series and hour (``span`` 60 / 3600),
  kept ``minute_days`` / ``hour_days``: counts and a latency histogram (log-spaced
  buckets, ±2.5 %), the status mix, the error groups (count, first/last seen, a sample
  request id) and the ``SLOWEST_K`` slowest requests. Any window is answered from whole
  hours, whole minutes at its edges and raw rows only for the sub-minute ragged edges
  (``telemetry.LocalTelemetry``): what a 7-day view costs grows with its hours, not its
  requests (App Insights' pre-aggregated metrics, Prometheus' bounded series).
"""
from __future__ import annotations

import hashlib
import math
import sqlite3
import struct
import uuid
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from ..errors import BackendUnavailable
from .db import Database

TELEMETRY_FILE = "telemetry.db"

# Latency histogram: bucket b holds [LOW_MS * GROWTH**b, LOW_MS * GROWTH**(b+1)).
LOW_MS = 0.05
GROWTH = 1.05                     # a bucket's midpoint is within 2.5 % of any value in it
BUCKETS = 340                     # up to ~10 minutes; slower requests land in the last bucket
HIST_DTYPE = np.dtype([("bucket", "<u2"), ("count", "<u4")])  # sparse: only non-empty buckets

MINUTE, HOUR = 60, 3600
SPANS = (MINUTE, HOUR)            # the aggregate levels
SLOWEST_K = 10                    # slowest requests kept per series and span: slowest(limit <= K) is exact
MAX_ERROR_GROUPS = 50             # distinct (status, message) per series and span; the rest: OTHER_ERRORS
MAX_ERROR_TEXT = 300
OTHER_ERRORS = "(other messages)"
MAX_STORED_BODY = 64 * 1024       # payloads kept for data collection, truncated beyond this

# Payload blocks: a version byte, then raw deflate primed with what payloads look like (small
# batches compress ~25 % better with it). Never change a dictionary in place: add a version.
_ZDICT = (b'{"predictions": [], "error": "model raised ValueError: expected 10 features per row"}'
          b'{"data": [[0.0, 1, 2, 3.5, 4.25, 5, 6, 7, 8, 9], [' + b"0123456789., " * 4)
_BLOCK_V1 = b"\x01"
_LENGTHS = struct.Struct("<ii")   # request and response body lengths in bytes, -1 for none


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


# --- compact encodings ---------------------------------------------------------------

def rid_of(request_id: str) -> int:
    """The 64-bit key a request id is looked up by (the index holds this, not the id)."""
    return int.from_bytes(hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                          "little", signed=True)


def pack_id(request_id: str) -> bytes | str:
    """A canonical (lower-case) UUID as its 16 bytes, anything else as given."""
    if len(request_id) == 36 and request_id[8] == "-":
        try:
            parsed = uuid.UUID(request_id)
        except ValueError:
            return request_id
        if str(parsed) == request_id:
            return parsed.bytes
    return request_id


def unpack_id(stored: bytes | str) -> str:
    return str(uuid.UUID(bytes=stored)) if isinstance(stored, bytes) else stored


def pack_payloads(bodies: list[tuple[str | None, str | None]]) -> bytes:
    parts = []
    for request, response in bodies:
        req = request.encode("utf-8", "replace") if request is not None else b""
        resp = response.encode("utf-8", "replace") if response is not None else b""
        parts += [_LENGTHS.pack(len(req) if request is not None else -1, len(resp) if response is not None else -1),
                  req, resp]
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15, 9, zdict=_ZDICT)
    return _BLOCK_V1 + deflate.compress(b"".join(parts)) + deflate.flush()


def unpack_payloads(block: bytes) -> list[tuple[str | None, str | None]]:
    if block[:1] != _BLOCK_V1:
        raise ValueError(f"unknown payload block version {block[:1]!r}")
    inflate = zlib.decompressobj(-15, zdict=_ZDICT)
    data = inflate.decompress(block[1:]) + inflate.flush()
    out, at = [], 0
    while at < len(data):
        n_req, n_resp = _LENGTHS.unpack_from(data, at)
        at += _LENGTHS.size
        req = data[at:at + max(n_req, 0)].decode("utf-8", "replace") if n_req >= 0 else None
        at += max(n_req, 0)
        resp = data[at:at + max(n_resp, 0)].decode("utf-8", "replace") if n_resp >= 0 else None
        at += max(n_resp, 0)
        out.append((req, resp))
    return out


# --- schema ---------------------------------------------------------------------------

_V1_REQUESTS = """
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
    """
# Migration 2 once filled these from the rows; migration 4 rebuilds everything from the rows, so
# a file still at version 1 only needs the tables to exist for migration 4 to drop them.
_V2_ROLLUPS = """
    CREATE TABLE rollup_minute (minute INTEGER, endpoint TEXT, deployment TEXT, model TEXT);
    CREATE TABLE rollup_status (minute INTEGER, endpoint TEXT, model TEXT, status INTEGER);
    """
# 3: the client's own request id (x-ms-client-request-id / x-request-id: a correlation id, not
# unique; request_id is the gateway's) and the time the request body took to arrive (Azure's
# RequestDurationMs), which latency_ms leaves out
_V3_CLIENT_IDS = """
    ALTER TABLE requests ADD COLUMN client_request_id TEXT;
    ALTER TABLE requests ADD COLUMN upload_ms REAL;
    CREATE INDEX requests_client_request_id ON requests(client_request_id);
    """
_V4_TABLES = """
    CREATE TABLE series (                   -- what a request's endpoint/deployment/model triple is stored as
        id INTEGER PRIMARY KEY,
        endpoint TEXT NOT NULL,
        deployment TEXT NOT NULL,           -- '' when no deployment answered
        model TEXT NOT NULL,                -- "name:version", '' when none
        UNIQUE (endpoint, deployment, model)
    );
    CREATE TABLE payloads (                 -- the bodies of one written batch (pack_payloads)
        id INTEGER PRIMARY KEY,
        data BLOB NOT NULL
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,                   -- epoch seconds
        series INTEGER NOT NULL,
        status INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        rid INTEGER NOT NULL,               -- rid_of(request id)
        request_id BLOB NOT NULL,           -- pack_id(request id)
        error TEXT,
        block INTEGER,                      -- payloads.id; NULL: payloads not captured (capture_fraction)
        slot INTEGER,                       -- the request's place in the block
        client_request_id TEXT,             -- the client's own id, when it sent one (not unique)
        upload_ms REAL                      -- receiving the body, apart from latency_ms
    );
    CREATE TABLE rollup (                   -- per series and minute (span 60) or hour (span 3600)
        span INTEGER NOT NULL,
        series INTEGER NOT NULL,
        start INTEGER NOT NULL,             -- epoch seconds of the minute's / hour's start (UTC)
        requests INTEGER NOT NULL,
        failures INTEGER NOT NULL,          -- 5xx and status 0 (no answer)
        client_errors INTEGER NOT NULL,     -- 4xx
        latency_sum REAL NOT NULL,
        hist BLOB NOT NULL,                 -- sparse (bucket u16, count u32) pairs
        PRIMARY KEY (span, series, start)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_status (
        span INTEGER NOT NULL,
        series INTEGER NOT NULL,
        start INTEGER NOT NULL,
        status INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        PRIMARY KEY (span, series, start, status)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_errors (            -- failures and client errors grouped by status and message
        span INTEGER NOT NULL,
        series INTEGER NOT NULL,
        start INTEGER NOT NULL,
        status INTEGER NOT NULL,
        error TEXT NOT NULL,                -- first MAX_ERROR_TEXT characters, '' for none
        requests INTEGER NOT NULL,
        first_ts REAL NOT NULL,
        last_ts REAL NOT NULL,
        sample_request_id TEXT NOT NULL,    -- the latest request of the group
        PRIMARY KEY (span, series, start, status, error)
    ) WITHOUT ROWID;
    CREATE TABLE rollup_slowest (           -- the SLOWEST_K slowest requests per series and span
        span INTEGER NOT NULL,
        series INTEGER NOT NULL,
        start INTEGER NOT NULL,
        latency_ms REAL NOT NULL,
        ts REAL NOT NULL,
        status INTEGER NOT NULL,
        request_id BLOB NOT NULL,
        error TEXT
    );
    CREATE INDEX rollup_slowest_at ON rollup_slowest(span, series, start);
    CREATE INDEX requests_ts ON requests(ts);
    CREATE INDEX requests_rid ON requests(rid);
    CREATE INDEX requests_client_request_id ON requests(client_request_id) WHERE client_request_id IS NOT NULL;
    CREATE TABLE pruned_days (              -- raw rows deleted by retention, per UTC day
        day INTEGER PRIMARY KEY,            -- epoch seconds of the day's start
        requests INTEGER NOT NULL,
        remembered_id INTEGER NOT NULL,     -- the filter holds the ids of the day's rows up to this row id
        pruned_at REAL NOT NULL,
        bloom BLOB NOT NULL                 -- their request ids (retention.Bloom): "pruned", not "unknown"
    );
    CREATE TABLE retained (                 -- what each level holds from (retention)
        level TEXT PRIMARY KEY,             -- 'raw', 'minute', 'hour'
        since REAL NOT NULL
    );
    CREATE TABLE spool_progress (           -- how far a gateway's write-ahead spool is in this file
        file TEXT PRIMARY KEY,
        offset INTEGER NOT NULL
    );
    """


def _compact(conn: sqlite3.Connection) -> None:
    """Migration 4: compact raw rows and the minute/hour aggregates, rebuilt from the stored rows."""
    for statement in ("ALTER TABLE requests RENAME TO requests_v1", "DROP INDEX requests_endpoint_ts",
                      "DROP INDEX requests_request_id", "DROP INDEX requests_client_request_id",
                      "DROP TABLE rollup_minute", "DROP TABLE rollup_status", *_V4_TABLES.split(";\n")):
        conn.execute(statement)
    series = SeriesIds()
    cursor = conn.execute("SELECT ts, endpoint, deployment, model, status, latency_ms, request_id, request_body,"
                          " response_body, error, client_request_id, upload_ms FROM requests_v1 ORDER BY id")
    while rows := cursor.fetchmany(20_000):
        series.commit(store(conn, [RequestRecord(*r) for r in rows], series))
    conn.execute("DROP TABLE requests_v1")


MIGRATIONS = [_V1_REQUESTS, _V2_ROLLUPS, _V3_CLIENT_IDS, _compact]


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
    """``telemetry.db``, migrated. ``BackendUnavailable`` naming the file when it is not a database."""
    path = Path(root) / TELEMETRY_FILE
    try:
        return Database(path, migrations=MIGRATIONS)
    except (sqlite3.DatabaseError, BackendUnavailable) as e:
        cause = e if isinstance(e, sqlite3.DatabaseError) else e.__cause__
        if not isinstance(cause, sqlite3.DatabaseError) or isinstance(cause, sqlite3.OperationalError):
            raise  # locked, read-only, ...: not a damaged file
        raise BackendUnavailable(  # "file is not a database", "database disk image is malformed"
            f"the telemetry file {path} cannot be read: {e}",
            hint=f"Move it aside (mv {path} {path}.corrupt): Tollgate starts a new, empty one. Serving, "
                 "releases and every page but the telemetry views work without it.") from e


class SeriesIds:
    """(endpoint, deployment, model) -> series id, cached by a writer (ids never change once given)."""

    def __init__(self):
        self.known: dict[tuple[str, str, str], int] = {}

    def ids(self, conn: sqlite3.Connection, keys: Iterable[tuple[str, str, str]]) -> dict[tuple, int]:
        """Ids of ``keys`` inside the caller's transaction. New ones are cached only by ``commit``."""
        out, new = {}, []
        for key in set(keys):
            if key in self.known:
                out[key] = self.known[key]
            else:
                new.append(key)
        if new:
            conn.executemany("INSERT OR IGNORE INTO series (endpoint, deployment, model) VALUES (?, ?, ?)", new)
            for key in new:
                out[key] = conn.execute("SELECT id FROM series WHERE endpoint = ? AND deployment = ? AND model = ?",
                                        key).fetchone()[0]
        return out

    def commit(self, ids: dict[tuple, int]) -> None:
        self.known.update(ids)


def captured(records: list[RequestRecord], fraction: float) -> list[bool]:
    """Whose payloads are kept: every failure and client error, and ``fraction`` of the successes,
    chosen by request id (the same request is always chosen the same way)."""
    if fraction >= 1.0:
        return [True] * len(records)
    cut = int(fraction * 2**63)
    return [not 200 <= r.status < 300 or abs(rid_of(r.request_id)) < cut for r in records]


def append(db: Database, records: list[RequestRecord], series: SeriesIds | None = None,
           capture_fraction: float = 1.0, progress: list[tuple[str, int]] = ()) -> None:
    """Store records (rows, payloads, aggregates) in one transaction; ``progress`` (spool file,
    offset after the records' lines) is written in the same transaction, so a record is either
    stored and its spool line passed, or neither."""
    series = series or SeriesIds()
    with db.write() as c:
        ids = store(c, records, series, capture_fraction)
        c.executemany("INSERT INTO spool_progress (file, offset) VALUES (?, ?)"
                      " ON CONFLICT (file) DO UPDATE SET offset = MAX(offset, excluded.offset)", progress)
    series.commit(ids)


def store(conn: sqlite3.Connection, records: list[RequestRecord], series: SeriesIds,
          capture_fraction: float = 1.0) -> dict[tuple, int]:
    """Rows, their payload block and the aggregates of ``records``, inside the caller's transaction.
    Returns the series ids used (for ``SeriesIds.commit`` once the transaction commits)."""
    if not records:
        return {}
    keys = [(r.endpoint, r.deployment or "", r.model or "") for r in records]
    ids = series.ids(conn, keys)
    keep = captured(records, capture_fraction)
    bodies = [(r.request_body, r.response_body) for r, k in zip(records, keep) if k]
    block = None
    if bodies:
        block = conn.execute("INSERT INTO payloads (data) VALUES (?)", (pack_payloads(bodies),)).lastrowid
    rows, slot = [], 0
    for r, key, k in zip(records, keys, keep):
        rows.append((r.ts, ids[key], r.status, r.latency_ms, rid_of(r.request_id), pack_id(r.request_id), r.error,
                     block if k else None, slot if k else None, r.client_request_id, r.upload_ms))
        slot += k
    conn.executemany("INSERT INTO requests (ts, series, status, latency_ms, rid, request_id, error, block, slot,"
                     " client_request_id, upload_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    _aggregate(conn, records, np.fromiter((ids[k] for k in keys), dtype=np.int64, count=len(keys)))
    return ids


# --- aggregates -----------------------------------------------------------------------

def _aggregate(conn: sqlite3.Connection, records: list[RequestRecord], series: np.ndarray) -> None:
    """Fold records into every span's aggregates: a read-modify-write of the touched (series, start)
    cells, each table read once per span for the batch's time range; callers hold the write
    transaction, so concurrent gateways serialise here."""
    n = len(records)
    ts = np.fromiter((r.ts for r in records), dtype=float, count=n)
    status = np.fromiter((r.status for r in records), dtype=np.int64, count=n)
    latency = np.fromiter((r.latency_ms for r in records), dtype=float, count=n)
    failing = (status >= 500) | (status == 0)
    client = (status >= 400) & (status < 500)
    buckets = bucket_of(latency)
    for span in SPANS:
        start = (ts // span).astype(np.int64) * span
        cells, cell_of = np.unique(np.stack([series, start], axis=1), axis=0, return_inverse=True)
        cell_of = cell_of.reshape(-1)
        cell_keys = [(span, int(s), int(t)) for s, t in cells]
        where = (span, int(start.min()), int(start.max()))
        _fold_rollup(conn, cell_keys, cell_of, where, failing, client, latency, buckets)
        pairs, counts = np.unique(np.stack([cell_of, status], axis=1), axis=0, return_counts=True)
        conn.executemany("INSERT INTO rollup_status VALUES (?, ?, ?, ?, ?) ON CONFLICT (span, series, start, status)"
                         " DO UPDATE SET requests = requests + excluded.requests",
                         [(*cell_keys[c], int(code), int(k)) for (c, code), k in zip(pairs, counts)])
        bad = np.flatnonzero(failing | client)
        if len(bad):
            _fold_errors(conn, cell_keys, where, [(cell_of[i], records[i]) for i in bad])
        _fold_slowest(conn, cell_keys, where, cell_of, records, latency)


def _fold_rollup(conn, cell_keys, cell_of, where, failing, client, latency, buckets) -> None:
    n_cells = len(cell_keys)
    counts = np.stack([np.bincount(cell_of, minlength=n_cells),
                       np.bincount(cell_of, weights=failing, minlength=n_cells),
                       np.bincount(cell_of, weights=client, minlength=n_cells)], axis=1).astype(np.int64)
    sums = np.bincount(cell_of, weights=latency, minlength=n_cells)
    hists = np.bincount(cell_of * BUCKETS + buckets, minlength=n_cells * BUCKETS).reshape(n_cells, BUCKETS)
    old = {(r[0], r[1]): r[2:] for r in conn.execute(
        "SELECT series, start, requests, failures, client_errors, latency_sum, hist FROM rollup"
        " WHERE span = ? AND start BETWEEN ? AND ?", where)}
    rows = []
    for i, cell in enumerate(cell_keys):
        values, hist = [*map(int, counts[i]), float(sums[i])], hists[i]
        prior = old.get(cell[1:])
        if prior is not None:
            values = [a + b for a, b in zip(values, prior[:4])]
            hist = hist + decode_hist(prior[4])
        rows.append((*cell, *values, encode_hist(hist)))
    conn.executemany("INSERT OR REPLACE INTO rollup VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)


def _fold_errors(conn, cell_keys, where, bad: list[tuple[int, RequestRecord]]) -> None:
    groups: dict[tuple, list] = {}
    for c, r in bad:
        key = (c, r.status, (r.error or "")[:MAX_ERROR_TEXT])
        g = groups.get(key)
        if g is None:
            groups[key] = [1, r.ts, r.ts, r.request_id]
        else:
            g[0] += 1
            g[1] = min(g[1], r.ts)
            if r.ts >= g[2]:
                g[2], g[3] = r.ts, r.request_id
    known: dict[tuple, set] = defaultdict(set)
    for series, start, code, error in conn.execute(
            "SELECT series, start, status, error FROM rollup_errors WHERE span = ? AND start BETWEEN ? AND ?", where):
        known[(series, start)].add((code, error))
    merged: dict[tuple, list] = defaultdict(lambda: [0, math.inf, -math.inf, ""])
    for (c, code, error), (count, first, last, sample) in sorted(groups.items(), key=lambda kv: -kv[1][0]):
        cell = cell_keys[c]
        seen = known[cell[1:]]
        if (code, error) not in seen:
            if len(seen) >= MAX_ERROR_GROUPS:
                error = OTHER_ERRORS  # counted still, under one message per status
            seen.add((code, error))
        m = merged[(*cell, code, error)]
        m[0] += count
        m[1] = min(m[1], first)
        if last >= m[2]:
            m[2], m[3] = last, sample
    conn.executemany(
        "INSERT INTO rollup_errors VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (span, series, start, status, error)"
        " DO UPDATE SET requests = requests + excluded.requests, first_ts = MIN(first_ts, excluded.first_ts),"
        " sample_request_id = CASE WHEN excluded.last_ts >= last_ts THEN excluded.sample_request_id"
        " ELSE sample_request_id END, last_ts = MAX(last_ts, excluded.last_ts)",
        [(*key, *m) for key, m in merged.items()])


def _fold_slowest(conn, cell_keys, where, cell_of: np.ndarray, records: list[RequestRecord],
                  latency: np.ndarray) -> None:
    order = np.lexsort((-latency, cell_of))  # by cell, slowest first
    rank = np.arange(len(order)) - np.searchsorted(cell_of[order], cell_of[order])
    top = order[rank < SLOWEST_K]
    kept: dict[tuple, list] = defaultdict(list)
    for rowid, series, start, lat in conn.execute(
            "SELECT rowid, series, start, latency_ms FROM rollup_slowest WHERE span = ? AND start BETWEEN ? AND ?",
            where):
        kept[(series, start)].append((lat, rowid))
    drop, add = [], []
    for c in np.unique(cell_of[top]):
        cell = cell_keys[c]
        mine = [(float(latency[i]), None, int(i)) for i in top[cell_of[top] == c]]
        ranked = sorted([(lat, rowid, None) for lat, rowid in kept.get(cell[1:], ())] + mine, key=lambda x: -x[0])
        drop += [(rowid,) for _, rowid, _ in ranked[SLOWEST_K:] if rowid is not None]
        add += [(*cell, records[i].latency_ms, records[i].ts, records[i].status, pack_id(records[i].request_id),
                 records[i].error) for _, rowid, i in ranked[:SLOWEST_K] if rowid is None]
    conn.executemany("DELETE FROM rollup_slowest WHERE rowid = ?", drop)
    conn.executemany("INSERT INTO rollup_slowest VALUES (?, ?, ?, ?, ?, ?, ?, ?)", add)


def decoded_rows(conn: sqlite3.Connection, request_ids: list[str] | None = None) -> list[dict]:
    """Raw rows as plain records, oldest first (series, ids and payloads decoded), optionally only those
    whose gateway id or client id is one of ``request_ids``: for tests, benchmarks and exports, which
    want what a gateway recorded, not how it is stored."""
    series = {i: (ep, dep or None, model or None) for i, ep, dep, model in conn.execute("SELECT * FROM series")}
    columns = ("SELECT id, ts, series, status, latency_ms, request_id, error, block, slot, client_request_id,"
               " upload_ms FROM requests")
    if request_ids is None:
        rows = conn.execute(columns + " ORDER BY id").fetchall()
    else:
        wanted = set(request_ids)
        keys, ids = sorted({rid_of(r) for r in wanted}), sorted(wanted)
        rows = conn.execute(f"{columns} WHERE rid IN ({', '.join('?' * len(keys))}) OR client_request_id IN"
                            f" ({', '.join('?' * len(ids))}) ORDER BY id", (*keys, *ids)).fetchall()
    used = {r[7] for r in rows if r[7] is not None}
    blocks = {b: unpack_payloads(d) for b, d in conn.execute(
        f"SELECT id, data FROM payloads WHERE id IN ({', '.join(str(int(b)) for b in used)})")} if used else {}
    out = []
    for row_id, ts, s, status, latency, rid, error, block, slot, client_id, upload_ms in rows:
        request_id = unpack_id(rid)
        if request_ids is not None and request_id not in wanted and client_id not in wanted:
            continue
        ep, dep, model = series[s]
        bodies = blocks[block][slot] if block is not None else (None, None)
        out.append({"id": row_id, "ts": ts, "endpoint": ep, "deployment": dep, "model": model, "status": status,
                    "latency_ms": latency, "request_id": request_id, "request_body": bodies[0],
                    "response_body": bodies[1], "error": error, "client_request_id": client_id,
                    "upload_ms": upload_ms, "payload_captured": block is not None})
    return out


def truncate(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_STORED_BODY:
        return text
    return text[:MAX_STORED_BODY] + f"…[truncated {len(text) - MAX_STORED_BODY} chars]"
