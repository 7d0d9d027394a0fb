"""The telemetry file over time: retention, pruned lookups, write-ahead spools, sampled payloads,
a damaged file, and the migration of a file written by an earlier Tollgate.

Records are written through ``telemetry_store.append`` (what the gateways' writer calls), the
retention through ``retention.prune`` (what the supervisor's telemetry tick calls), on a
clock passed in, so that weeks go by in a second.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from bench.telemetry_data import generate
from services.errors import BackendUnavailable, Conflict, NotFound
from services.local import retention
from services.local.logs import LocalLogs
from services.local.telemetry import LocalTelemetry, plan
from services.local.telemetry_spool import Spool, TelemetryWriter, fold_spools, spool_dir
from services.local.telemetry_store import (RequestRecord, SeriesIds, append, decoded_rows, open_telemetry,
                                            pack_id, unpack_id)
from services.local.workspace import LocalWorkspace
from services.policy import TelemetryPolicy
from services.telemetry import window

ROOT = Path(__file__).resolve().parent.parent
DAY = 86_400
END = 1_767_614_417.25      # the synthetic data's default end (a Monday, 12:00:17.25 UTC)


def utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, tz=timezone.utc)


def telemetry(root: Path) -> LocalTelemetry:
    return LocalTelemetry(root, LocalLogs(root))


@pytest.fixture(scope="module")
def month(tmp_path_factory):
    """30 days of synthetic traffic (60,000 requests), pruned at the end with the default retention."""
    root = tmp_path_factory.mktemp("month")
    data = generate(60_000, days=30, seed=11)
    db = open_telemetry(root)
    for batch in data.batches(20_000):
        append(db, batch)
    before = {"raw": db.one("SELECT COUNT(*) FROM requests")[0],
              "stats": telemetry(root).stats(window("30d", end=utc(END)))}
    done = retention.prune(db, TelemetryPolicy(), now=END, budget_s=600)
    yield root, data, before, done
    db.close()


def test_pruning_keeps_the_retained_window_and_the_aggregates(month):
    root, data, before, done = month
    tel = telemetry(root)
    since = retention.retained(tel.db)
    horizon = (END - 7 * DAY) // DAY * DAY  # whole days older than 7 days are gone
    assert since["raw"] == horizon
    kept = sum(data.ts >= horizon)
    assert tel.db.one("SELECT COUNT(*) FROM requests")[0] == kept == before["raw"] - done["raw_rows"]
    assert tel.db.one("SELECT MIN(ts) FROM requests")[0] >= horizon
    # no payload block left without a row, and every row's block is there
    assert tel.db.one("SELECT COUNT(*) FROM requests r LEFT JOIN payloads p ON p.id = r.block"
                      " WHERE r.block IS NOT NULL AND p.id IS NULL")[0] == 0
    # the 30-day views still count every request but those of the window's first, ragged minute:
    # that part was only ever in raw rows, now pruned
    w = window("30d", end=utc(END))
    after = tel.stats(w)
    first_minute = (data.ts >= w.start.timestamp()) & (data.ts < -(-w.start.timestamp() // 60) * 60)
    assert sum(s.requests for s in before["stats"]) == len(data)
    assert sum(s.requests for s in after) == len(data) - int(first_minute.sum())
    assert {(s.endpoint, s.model) for s in after} == {(s.endpoint, s.model) for s in before["stats"]}
    # a week's series is still exact to the request, edges from raw rows included
    w = window("24h", end=utc(END))
    assert int(tel.series(w)["requests"].sum()) == int(((data.ts >= w.start.timestamp()) &
                                                       (data.ts < w.end.timestamp())).sum())
    tel.close()


def test_a_pruned_request_says_when_it_was_pruned(month):
    root, data, _, _ = month
    tel = telemetry(root)
    old = data.request_ids[10]                  # the first day: pruned
    with pytest.raises(NotFound, match="pruned on") as e:
        tel.lookup(old)
    assert utc(data.ts[10]).strftime("%Y-%m-%d") in str(e.value)
    recent = data.request_ids[-5]
    assert tel.lookup(recent).record.request_id == recent
    with pytest.raises(NotFound, match="no request with id"):
        tel.lookup("never-sent-" + "x" * 20)
    tel.close()


def test_aggregates_past_their_horizon_go_too(tmp_path):
    data = generate(20_000, days=3, seed=3)
    db = open_telemetry(tmp_path)
    append(db, data.records())
    rules = TelemetryPolicy(raw_days=1, minute_days=1, hour_days=2)
    done = retention.prune(db, rules, now=END, budget_s=60)
    assert done["minute_rows"] > 0 and done["hour_rows"] > 0
    assert db.one("SELECT MIN(start) FROM rollup WHERE span = 60")[0] >= END - 2 * DAY
    assert db.one("SELECT MIN(start) FROM rollup WHERE span = 3600")[0] >= (END - 2 * DAY) // DAY * DAY
    # a 3-day window: hours where they are kept, nothing before
    stats = telemetry(tmp_path).stats(window("3d", end=utc(END)))
    hour_since = retention.retained(db)["hour"]
    assert sum(s.requests for s in stats) == int(((data.ts >= hour_since) & (data.ts < END)).sum())
    assert retention.prune(db, rules, now=END, budget_s=60) == {"raw_rows": 0, "minute_rows": 0, "hour_rows": 0}
    db.close()


def test_a_window_is_planned_from_hours_minutes_and_raw_edges():
    h = 1_767_600_000 // 3600 * 3600
    start, end = h - 90.5, h + 2 * 3600 + 125.25
    assert plan(start, end, None, {}) == [("hour", h, h + 7200), ("minute", h - 60, h), ("minute", h + 7200, h + 7320),
                                          ("raw", start, h - 60), ("raw", h + 7320, end)]
    # 30-minute bins: no hours (an hour spans two bins)
    assert [p[0] for p in plan(start, end, 1800, {})] == ["minute", "raw", "raw"]
    # 10-second bins: raw rows only
    assert plan(start, end, 10, {}) == [("raw", start, end)]
    # what retention pruned is not read: minutes from their horizon on, raw rows from theirs
    assert plan(start, end, None, {"minute": h + 7260, "raw": h + 7300}) == [
        ("hour", h, h + 7200), ("minute", h + 7260, h + 7320), ("raw", h + 7320, end)]


def test_a_dead_gateways_spool_is_folded_exactly_once(tmp_path):
    records = [RequestRecord(END + i, "production", "blue", "m:1", 200 if i % 5 else 500, 3.0 + i, f"req-{i}",
                             '{"data": [[1, 2]]}', '{"predictions": [3]}', None if i % 5 else "boom")
               for i in range(50)]
    spool = Spool(spool_dir(tmp_path), "production")
    ends = [spool.append(r)[1] for r in records]
    db = open_telemetry(tmp_path)
    append(db, records[:20], progress=[(spool.name, ends[19])])  # what the writer stored before the kill
    with open(spool_dir(tmp_path) / spool.name, "ab") as f:
        f.write(b'[1767614417.0, "production", "blue", "m:1", 200')  # a line cut by the kill
    assert fold_spools(tmp_path, db) == 0   # still locked: a live writer's
    spool.close()                           # the process is gone: its lock with it
    assert fold_spools(tmp_path, db) == 30
    assert fold_spools(tmp_path, db) == 0 and not list(spool_dir(tmp_path).iterdir())
    conn = sqlite3.connect(tmp_path / "telemetry.db")
    rows = decoded_rows(conn)
    assert sorted(r["request_id"] for r in rows) == sorted(r.request_id for r in records)
    assert db.one("SELECT SUM(requests) FROM rollup WHERE span = 60")[0] == 50
    assert db.one("SELECT COUNT(*) FROM spool_progress")[0] == 0
    conn.close()
    db.close()


def test_a_writer_stores_what_it_spooled_and_removes_its_spool(tmp_path):
    writer = TelemetryWriter(tmp_path, "staging", flush_interval_s=0.01)
    for i in range(300):
        writer.record(RequestRecord(END + i / 10, "staging", "green", "m:2", 200, 1.5, f"w-{i}", "{}", "{}", None))
    writer.close()
    conn = sqlite3.connect(tmp_path / "telemetry.db")
    assert len(decoded_rows(conn)) == 300
    assert conn.execute("SELECT COUNT(*) FROM spool_progress").fetchone()[0] == 0
    conn.close()
    assert not list(spool_dir(tmp_path).glob("*.jsonl"))


def test_capture_fraction_keeps_every_failure_and_a_share_of_the_successes(tmp_path):
    data = generate(5_000, days=1, seed=5)
    db = open_telemetry(tmp_path)
    append(db, data.records(), capture_fraction=0.25)
    conn = sqlite3.connect(tmp_path / "telemetry.db")
    rows = decoded_rows(conn)
    ok = [r for r in rows if 200 <= r["status"] < 300]
    assert all(r["payload_captured"] for r in rows if not 200 <= r["status"] < 300)
    assert 0.2 < sum(r["payload_captured"] for r in ok) / len(ok) < 0.3
    assert all(r["request_body"] is None for r in ok if not r["payload_captured"])
    tel = telemetry(tmp_path)
    skipped = next(r for r in ok if not r["payload_captured"])
    detail = tel.lookup(skipped["request_id"]).record
    assert not detail.payload_captured and detail.request_body is None and detail.status == skipped["status"]
    kept = next(r for r in ok if r["payload_captured"])
    assert tel.lookup(kept["request_id"]).record.request_body == kept["request_body"]
    # the drift check reads only what was kept
    inputs = tel.collected_inputs(window("24h", end=utc(END)), "production")
    assert set(inputs["request_id"]) <= {r["request_id"] for r in ok if r["payload_captured"]}
    tel.close()
    conn.close()
    db.close()


def test_request_ids_are_stored_compactly_and_read_back_as_given():
    for rid in ("3f2b8e1c-9a4d-4c1e-8f00-12ab34cd56ef", "3F2B8E1C-9A4D-4C1E-8F00-12AB34CD56EF", "load-abc-12", "ä" * 40):
        stored = pack_id(rid)
        assert unpack_id(stored) == rid
        assert isinstance(stored, bytes) == (rid == rid.lower() and len(rid) == 36 and rid[8] == "-")


def test_a_damaged_telemetry_file_fails_only_the_telemetry_views(tmp_path):
    ws = LocalWorkspace(tmp_path)
    ws.close()
    (tmp_path / "telemetry.db").write_bytes(b"this is not a database, but it is 100 bytes long" * 10)
    ws = LocalWorkspace(tmp_path)                      # opens: telemetry is opened on first use
    assert ws.jobs.list() == [] and {e.name for e in ws.endpoints.list()} == {"production", "staging"}
    with pytest.raises(BackendUnavailable) as e:
        ws.telemetry.stats(window("1h"))
    assert str(tmp_path / "telemetry.db") in str(e.value) and "Move it aside" in e.value.hint
    ws.close()
    cli = [sys.executable, "tollgate.py", "--workspace", f"local://{tmp_path}", "--as", "admin@contoso.com"]
    for command in (["status"], ["endpoint", "--env", "production"], ["up"], ["down"]):
        done = subprocess.run([*cli, *command], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (command, done.stderr)
    views = subprocess.run([*cli, "telemetry", "--since", "1h"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert views.returncode == 2 and "telemetry.db" in views.stderr and "Traceback" not in views.stderr


def test_a_file_written_by_an_earlier_tollgate_is_migrated_with_its_aggregates(tmp_path):
    """Schema version 2: text rows and per-minute rollups only (then 3: the client's request ids, 4: compact)."""
    conn = sqlite3.connect(tmp_path / "telemetry.db")
    conn.executescript("""
        CREATE TABLE requests (id INTEGER PRIMARY KEY, ts REAL NOT NULL, endpoint TEXT NOT NULL, deployment TEXT,
            model TEXT, status INTEGER NOT NULL, latency_ms REAL NOT NULL, request_id TEXT NOT NULL,
            request_body TEXT, response_body TEXT, error TEXT);
        CREATE INDEX requests_endpoint_ts ON requests(endpoint, ts);
        CREATE INDEX requests_request_id ON requests(request_id);
        CREATE TABLE rollup_minute (minute INTEGER, endpoint TEXT, deployment TEXT, model TEXT, requests INTEGER);
        CREATE TABLE rollup_status (minute INTEGER, endpoint TEXT, model TEXT, status INTEGER, requests INTEGER);
        PRAGMA user_version = 2;
    """)
    data = generate(3_000, days=1, seed=9)
    conn.executemany("INSERT INTO requests (ts, endpoint, deployment, model, status, latency_ms, request_id,"
                     " request_body, response_body, error) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(r.ts, r.endpoint, r.deployment, r.model, r.status, r.latency_ms, r.request_id, r.request_body,
                       r.response_body, r.error) for r in data.records()])
    conn.commit()
    conn.close()
    tel = telemetry(tmp_path)
    stats = tel.stats(window("24h", end=utc(END)))
    assert sum(s.requests for s in stats) == int((data.ts >= END - DAY).sum())
    probe = data.records(100, 101)[0]
    assert tel.lookup(probe.request_id).record.request_body == probe.request_body
    assert tel.db.one("PRAGMA user_version")[0] == 4
    tel.close()


def test_series_ids_cache_only_what_was_committed(tmp_path):
    db = open_telemetry(tmp_path)
    series = SeriesIds()
    rec = RequestRecord(END, "a", None, None, 0, 1.0, "x", None, None, "no answer")
    with pytest.raises(RuntimeError):
        with db.write() as c:
            series.ids(c, [("a", "", "")])
            raise RuntimeError("rolled back")
    assert series.known == {}
    append(db, [rec], series)
    assert list(series.known) == [("a", "", "")]
    assert json.loads(json.dumps(decoded_rows(db.conn)[0]["request_id"])) == "x"
    db.close()


def test_a_writer_rotates_its_spool_and_leaves_no_file_behind(tmp_path, monkeypatch):
    from services.local import telemetry_spool
    monkeypatch.setattr(telemetry_spool, "ROTATE_BYTES", 2_000)
    writer = TelemetryWriter(tmp_path, "production", flush_interval_s=0.005, batch=20)
    db = open_telemetry(tmp_path)
    seen = set()
    for i in range(400):
        writer.record(RequestRecord(END + i / 100, "production", "blue", "m:1", 200, 2.0, f"r-{i}", "{}", "{}", None))
        seen.add(writer.spool.name)
        if i % 50 == 49:  # let the writer store (and rotate); a supervisor folding meanwhile must not store twice
            deadline = time.monotonic() + 30
            while db.one("SELECT COUNT(*) FROM requests")[0] < i + 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            fold_spools(tmp_path, db)
    writer.close()
    db.close()
    assert len(seen) >= 2, (seen, list(spool_dir(tmp_path).iterdir()))  # it did rotate
    conn = sqlite3.connect(tmp_path / "telemetry.db")
    ids = [r["request_id"] for r in decoded_rows(conn)]
    assert sorted(ids) == sorted(f"r-{i}" for i in range(400))
    conn.close()
    assert not list(spool_dir(tmp_path).glob("*.jsonl"))


def test_a_client_request_id_finds_its_request_and_a_reused_one_lists_them(tmp_path):
    db = open_telemetry(tmp_path)
    append(db, [RequestRecord(END + i, "production", "blue", "m:1", 200, 2.0, f"3f2b8e1c-9a4d-4c1e-8f00-12ab34cd56e{i}",
                              "{}", "{}", None, client_request_id="mine" if i < 2 else "once", upload_ms=0.5)
                for i in range(3)])
    tel = telemetry(tmp_path)
    once = tel.lookup("once").record
    assert (once.request_id, once.client_request_id, once.upload_ms) == \
        ("3f2b8e1c-9a4d-4c1e-8f00-12ab34cd56e2", "once", 0.5)
    with pytest.raises(Conflict, match="2 requests carry the client request id 'mine'"):
        tel.lookup("mine")
    assert tel.lookup("3f2b8e1c-9a4d-4c1e-8f00-12ab34cd56e0").record.client_request_id == "mine"
    assert {r["client_request_id"] for r in decoded_rows(db.conn, ["mine"])} == {"mine"}
    tel.close()
    db.close()
